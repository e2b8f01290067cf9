"""``chargeops serve`` under cProfile, timed by the event loop thread's own CPU clock.

    CHARGEOPS_...=... .venv/bin/python tests/bench/cprofile_serve.py OUT.pstats

Profiling is off at start; SIGUSR1 switches it on, SIGUSR2 switches it off and writes
OUT.pstats (``ocpp_throughput.py --profiler cprofile`` does this around the measured
window). The timer is ``time.thread_time``: time the event loop thread spent waiting (for
the database threads, for I/O) is not charged, unlike py-spy's active samples, which
count a thread blocked in fsync as busy. cProfile's own overhead slows the server, so
throughput measured under it is not comparable; only the proportions are of interest.
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType


def main() -> None:
    out = sys.argv[1]
    profiler = cProfile.Profile(time.thread_time)

    def start(_sig: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from services.cli import app

    app(["serve"])


if __name__ == "__main__":
    main()
