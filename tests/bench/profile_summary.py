"""Summarize a py-spy ``record --format raw --threads`` profile: where server time goes.

    .venv/bin/python tests/bench/profile_summary.py var/bench-profiles/<file>.txt

Prints the split by thread (event loop vs aiosqlite worker threads), self time by library
(the leaf Python frame; C code such as orjson or sqlite3 is charged to its Python caller),
and the top functions by self and by inclusive time. Percentages are of the samples in
which a thread was active (py-spy leaves idle threads out).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")

LIBRARIES = (
    ("csms/", "csms (ChargeOps)"),
    ("services/", "services (ChargeOps)"),
    ("ticketing/", "ticketing (ChargeOps)"),
    ("websockets/", "websockets"),
    ("sqlalchemy/", "sqlalchemy"),
    ("aiosqlite/", "aiosqlite + sqlite3 (C)"),
    ("pydantic", "pydantic"),
    ("ocpp/", "ocpp library"),
    ("<string>", "fastjsonschema validators"),
    ("fastjsonschema/", "fastjsonschema"),
    ("prometheus_client/", "prometheus_client"),
    ("asyncio/", "asyncio"),
    ("uvloop", "uvloop"),
    ("logging/", "logging"),
    ("uuid.py", "uuid"),
    ("json/", "json (stdlib)"),
    ("greenlet", "greenlet"),
    ("typing.py", "typing"),
    ("enum.py", "enum"),
    ("dataclasses.py", "dataclasses"),
    ("datetime.py", "datetime"),
    ("threading.py", "threading"),
    ("queue.py", "queue"),
)


ROOT_FILES = ("typer/", "click/", "services/cli.py", "services/wiring.py", "asyncio/runners.py")
LOOP_FUNCS = ("Runner.run", "BaseEventLoop.run_forever", "BaseEventLoop.run_until_complete")


def library(path: str, func: str = "") -> str:
    if func in LOOP_FUNCS:
        return "event loop itself (uvloop C: poll, socket I/O, callbacks)"
    for prefix, name in LIBRARIES:
        if path.startswith(prefix) or prefix in path:
            return name
    if "/" not in path:
        return f"stdlib {path}"
    return path.split("/", 1)[0]


def split_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), "?"
    return m.group("func"), m.group("file")


def thread_group(first: str) -> str:
    name = first.split(":", 1)[1].strip() if ":" in first else first
    if "_connection_worker_thread" in name:
        return "aiosqlite worker threads (SQLite I/O + C)"
    if name == "MainThread":
        return "event loop thread"
    return "other threads (" + re.sub(r"[-_ ]?\d+", "", name) + ")"


def parse(path: Path) -> list[tuple[list[str], int]]:
    samples = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples.append((stack.split(";"), int(count)))
    return samples


def summarize(path: Path, top: int = 20) -> str:
    samples = parse(path)
    total = sum(c for _, c in samples)
    if not total:
        return "  (no samples)"
    threads: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in samples:
        frames = stack
        if frames and frames[0].startswith("thread ("):
            threads[thread_group(frames[0])] += count
            frames = frames[1:]
        if not frames:
            continue
        func, file = split_frame(frames[-1])
        by_library[library(file, func)] += count
        self_time[f"{func} ({file})"] += count
        seen = set()
        for frame in frames:
            func, file = split_frame(frame)
            if file == "chargeops" or file.startswith(ROOT_FILES):
                continue  # the process's entry chain: present in every rooted sample
            key = f"{func} ({file})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"  {total} active samples"]
    out.append("  by thread:")
    out += [f"    {pct(n)}  {name}" for name, n in threads.most_common()]
    out.append("  self time by library (leaf Python frame):")
    out += [f"    {pct(n)}  {name}" for name, n in by_library.most_common(top)]
    out.append(f"  top {top} functions by self time:")
    out += [f"    {pct(n)}  {name}" for name, n in self_time.most_common(top)]
    out.append(
        f"  top {top} functions by inclusive time (SQLAlchemy's greenlets start new stacks, so"
        " their time is not charged to the caller):"
    )
    out += [f"    {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def summarize_pstats(path: Path, top: int = 25) -> str:
    """Top functions of a cProfile dump by own time and by cumulative time."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs()
    total = stats.total_tt  # type: ignore[attr-defined]
    out.write(f"  event loop thread CPU seconds profiled: {total:.2f}\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("profile", type=Path, nargs="+")
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    for path in args.profile:
        print(f"{path}:")
        print(
            summarize_pstats(path, args.top)
            if path.suffix == ".pstats"
            else summarize(path, args.top)
        )


if __name__ == "__main__":
    main()
