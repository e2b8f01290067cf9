"""The console script's entry point catches the stop signals before the heavy imports."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import signal, sys
from services import entry
entry.catch_stop_signals()
assert signal.getsignal(signal.SIGTERM) is entry._on_stop_signal
assert signal.getsignal(signal.SIGINT) is entry._on_stop_signal
heavy = sorted(m for m in ("typer", "pydantic", "pydantic_settings", "sqlalchemy", "services.cli",
                           "services.settings") if m in sys.modules)
print(",".join(heavy))
"""


def test_console_script_is_the_entry_module() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["chargeops"] == "services.entry:main"


def test_stop_signals_are_caught_before_anything_heavy_is_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == ""


def test_a_command_that_does_not_serve_keeps_the_default_actions() -> None:
    """``chargeops migrate --help`` etc.: SIGTERM kills them as usual (no silent ignore)."""
    probe = (
        "import signal; from services import entry; entry.catch_stop_signals(); "
        "entry.restore_stop_signals(); "
        "assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL; "
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)


def test_a_signal_before_a_command_that_does_not_serve_takes_its_default_effect() -> None:
    probe = (
        "import signal, os; from services import entry; entry.catch_stop_signals(); "
        "os.kill(os.getpid(), signal.SIGTERM); entry.restore_stop_signals(); print('survived')"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -15
    assert "survived" not in done.stdout
