"""One module per rule kind; importing this package registers every one of them.

Each module defines one ``RuleKind`` subclass decorated with ``@register``: adding a kind
is adding a module here (plus its test rows and its example), nothing else.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
