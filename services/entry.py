"""The ``chargeops`` console script's first code: it catches SIGTERM and SIGINT before anything
heavy is imported, then hands over to :mod:`services.cli`.

Importing the CLI (typer, pydantic, settings) takes a few hundred milliseconds; a supervisor that
stops a process it has just started (a rolling restart, ``docker stop`` right after ``up``) would
otherwise kill it with the default action (exit 143) instead of the clean stop (exit 0) the serving
commands promise. Only the standard library is imported here.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

#: Set by SIGTERM/SIGINT from the start of the process; the serving commands stop on it.
stop_requested = threading.Event()
#: The first of those signals, if one arrived (commands that do not serve re-raise it).
received: list[int] = []
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _on_stop_signal(signum: int, _frame: FrameType | None) -> None:
    if not received:
        received.append(signum)
    stop_requested.set()


def catch_stop_signals() -> None:
    """From now on SIGTERM and SIGINT only set :data:`stop_requested`."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)


def restore_stop_signals() -> None:
    """Back to the default actions (for commands that do not serve); a signal that arrived
    meanwhile takes its default effect now."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        signal.raise_signal(received[0])


def main() -> None:
    catch_stop_signals()
    from services.cli import app

    app()
