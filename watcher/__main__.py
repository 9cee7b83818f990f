"""``python -m watcher`` and the ``watcher`` command.

``watcher run`` owes exit 0 to a SIGTERM at any moment, also one that arrives while it
is still importing and reading its config (systemd restarting a unit, a supervisor
giving up): so the first thing it does is to turn SIGTERM into a KeyboardInterrupt,
which the CLI answers with exit 0, until the daemon's event loop takes the signal over.
SIGHUP (``systemctl reload``) would end the process by default: it is ignored until the
daemon's loop installs its reload handler (the config being read then is the one read).
"""

from __future__ import annotations

import signal
import sys


def _stop_before_start(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        signal.signal(signal.SIGTERM, _stop_before_start)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        from .cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # also while the arguments are parsed, before the CLI's own
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
