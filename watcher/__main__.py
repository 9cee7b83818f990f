"""``python -m watcher`` is the ``watcher`` command."""

from .cli import main

raise SystemExit(main())
