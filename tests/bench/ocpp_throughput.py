"""OCPP throughput: ChargeOps against a bare websockets + orjson echo server (the ceiling).

For every (connections, OCPP version, message) combination this starts a fresh
``chargeops serve`` (fresh SQLite file, validation on, every event group-committed before
its CALLRESULT) and a fresh echo server, drives each from separate load processes with
closed-loop charge points (one CALL outstanding per connection), warms up, measures for
``--seconds`` and prints msgs/s, p50/p99 latency, server CPU (user+sys of the server
process) per message and the ChargeOps/echo ratio. It only measures; it asserts nothing.

    .venv/bin/python tests/bench/ocpp_throughput.py                      # everything
    .venv/bin/python tests/bench/ocpp_throughput.py --connections 100 --message status \\
        --version 1.6 --seconds 10 --profile var/bench-profiles          # + py-spy profile

Target (for information): ChargeOps with validation on and every event durable at
>= 35% of the echo ceiling at 100 connections.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import (
    ChargeOpsServer,
    CpuPlan,
    EchoServer,
    FloorServer,
    LoadGenerator,
    Phase,
    bench_ids,
    commit_stats,
    ms,
    percentile,
    sleep_until,
    start_run,
    system_busy_seconds,
    table,
    write_json,
)
from profile_summary import summarize, summarize_pstats

MESSAGES = ("heartbeat", "status", "meter", "mix")


def parse_list(value: str, allowed: tuple[str, ...], all_: tuple[str, ...]) -> list[str]:
    items: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if item in ("all", "both"):
            items.extend(all_)
        elif item in allowed:
            items.append(item)
        else:
            raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", default="100,1000", help="comma list (default 100,1000)")
    p.add_argument("--version", default="both", help="1.6, 2.0.1 or both (default both)")
    p.add_argument(
        "--message",
        default="all",
        help="comma list of heartbeat, status, meter, mix (a rotation of the three in one run)"
        "; all = heartbeat,status,meter (default all)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (default 3)")
    p.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="echo server on uvloop (chargeops serve always uses uvloop); default on",
    )
    p.add_argument(
        "--synchronous",
        default="FULL",
        help="CHARGEOPS_SQLITE_SYNCHRONOUS: FULL, NORMAL or both (default FULL)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per combination; the median is reported (1)"
    )
    p.add_argument(
        "--targets",
        default="chargeops,echo",
        help="comma list of chargeops, echo and floor (the least work a durable server must do: "
        "floor_server.py); default chargeops,echo",
    )
    p.add_argument("--client-procs", type=int, default=1, help="load processes (default 1)")
    p.add_argument(
        "--client-uvloop", action=argparse.BooleanOptionalAction, default=True, help="default on"
    )
    p.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="CPU pinning (on)"
    )
    p.add_argument(
        "--register",
        choices=("api", "db"),
        default="api",
        help="register chargers via POST /api/v1/chargers (api, default) or rows in the DB",
    )
    p.add_argument(
        "--keep-rate-limit",
        action="store_true",
        help="keep the per-charger frame rate limit (200/s) instead of raising it",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="record the ChargeOps server with py-spy during each measured window into DIR",
    )
    p.add_argument(
        "--profiler",
        choices=("py-spy", "cprofile"),
        default="py-spy",
        help="py-spy (sampling, low overhead; default) or cprofile (tests/bench/cprofile_serve.py:"
        " event loop thread CPU time per function, high overhead)",
    )
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s (250)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",")]
    args.versions = parse_list(args.version, ("1.6", "2.0.1"), ("1.6", "2.0.1"))
    args.messages = parse_list(args.message, MESSAGES, ("heartbeat", "status", "meter"))
    args.synchronous = parse_list(
        args.synchronous.upper().replace("BOTH", "both"), ("FULL", "NORMAL"), ("FULL", "NORMAL")
    )
    args.targets = parse_list(
        args.targets, ("chargeops", "echo", "floor"), ("chargeops", "echo", "floor")
    )
    return args


def start_profiler(pid: int, seconds: float, rate: int, out: Path, plan: CpuPlan) -> Any:
    exe = Path(sys.executable).parent / "py-spy"
    cmd = [
        str(exe),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, math.floor(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--threads",
        "--nonblocking",
        "--output",
        str(out),
    ]
    preexec = None
    if plan.client is not None:
        cpus = plan.client

        def preexec() -> None:
            os.sched_setaffinity(0, cpus)

    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec
    )


def run_one(
    target: str,
    version: str,
    kind: str,
    connections: int,
    synchronous: str,
    args: argparse.Namespace,
    plan: CpuPlan,
) -> dict[str, Any]:
    durable = target != "echo"
    label = f"{target}{' ' + synchronous if durable else ''}"
    print(f"  {label:<16} {connections:>5} conns, OCPP {version}, {kind} ...", end="", flush=True)
    ids = bench_ids(connections)
    server: ChargeOpsServer | EchoServer | FloorServer
    info: dict[str, Any] = {}
    profile_out = None
    command = None
    if args.profile and target == "chargeops":
        suffix = "pstats" if args.profiler == "cprofile" else "txt"
        name = f"{target}-{synchronous}-{version}-{kind}-{connections}.{suffix}"
        profile_out = Path(args.profile).resolve() / name
        profile_out.parent.mkdir(parents=True, exist_ok=True)
        profile_out.unlink(missing_ok=True)
        info["profile"] = str(profile_out)
        if args.profiler == "cprofile":
            wrapper = Path(__file__).with_name("cprofile_serve.py")
            command = [sys.executable, str(wrapper), str(profile_out)]
    if target == "chargeops":
        server = ChargeOpsServer(
            synchronous=synchronous,
            cpus=plan.server,
            keep_rate_limit=args.keep_rate_limit,
            command=command,
        )
        server.migrate()
        if args.register == "db":
            server.seed_chargers(ids)
            server.start()
        else:
            server.start()
            info["register_seconds"] = round(server.register_via_api(ids), 2)
    elif target == "floor":
        server = FloorServer(synchronous=synchronous, cpus=plan.server)
    else:
        server = EchoServer(use_uvloop=args.uvloop, cpus=plan.server)
    profiler = None
    try:
        with LoadGenerator(
            port=server.ocpp_port,
            version=version,
            kind=kind,
            charger_ids=ids,
            procs=args.client_procs,
            cpus=plan.client,
            use_uvloop=args.client_uvloop,
        ) as load:
            ready = load.wait_ready(180)
            go = time.monotonic() + 0.1
            phase = Phase(start=go + args.warmup, end=go + args.warmup + args.seconds)
            load.start_phase(phase)
            sleep_until(phase.start)
            m0 = server.metrics()
            cpu0, ccpu0, busy0 = server.cpu_seconds(), load.cpu_seconds(), system_busy_seconds()
            loop0 = server.loop_thread_cpu_seconds()
            if profile_out is not None and args.profiler == "py-spy":
                profiler = start_profiler(
                    server.pid, args.seconds, args.profile_rate, profile_out, plan
                )
            elif profile_out is not None:
                os.kill(server.pid, signal.SIGUSR1)
            sleep_until(phase.end)
            cpu1, ccpu1, busy1 = server.cpu_seconds(), load.cpu_seconds(), system_busy_seconds()
            loop1 = server.loop_thread_cpu_seconds()
            m1 = server.metrics()
            if profile_out is not None and args.profiler == "cprofile":
                os.kill(server.pid, signal.SIGUSR2)
                deadline = time.monotonic() + 30
                while not profile_out.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(0.5)
            rss = server.rss()
            result = load.collect(args.seconds + 60)
    finally:
        if isinstance(server, ChargeOpsServer):
            errors = server.error_lines()
            code = server.stop()
            info["server_exit"] = code
            if errors:
                info["server_errors"] = errors
            server.cleanup()
        else:
            server.stop()
    if profiler is not None:
        _, err = profiler.communicate(timeout=60)
        if profiler.returncode != 0:
            info["profile_error"] = err.decode(errors="replace")[-500:]
    lat = result.sorted_latencies()
    done = len(lat)
    row = {
        "target": target,
        "synchronous": synchronous if durable else None,
        "uvloop": True if durable else args.uvloop,
        "version": version,
        "message": kind,
        "connections": connections,
        "connected": ready["connected"],
        "connect_failures": ready["failures"],
        "seconds": args.seconds,
        "msgs_per_s": done / args.seconds,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": (lat[-1] if lat else math.nan) * 1000,
        "server_cpu_util": (cpu1 - cpu0) / args.seconds,
        "server_cpu_us_per_msg": (cpu1 - cpu0) / done * 1e6 if done else math.nan,
        "loop_thread_cpu_util": (loop1 - loop0) / args.seconds,
        **(commit_stats(m0, m1, args.seconds) if target == "chargeops" else {}),
        "client_cpu_util": (ccpu1 - ccpu0) / args.seconds,
        # Everything else the machine did meanwhile (other processes, kernel, profiler).
        "other_cpu_util": max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (ccpu1 - ccpu0))
        / args.seconds,
        "server_rss_mb": rss / 2**20,
        "call_errors": result.errors,
        "first_error": result.first_error,
        "lost": result.lost,
        "server_calls": result.server_calls,
        **info,
    }
    print(
        f" {row['msgs_per_s']:>8.0f} msg/s  p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
        f"  server CPU {row['server_cpu_util']:.0%}  load CPU {row['client_cpu_util']:.0%}"
        f"  other CPU {row['other_cpu_util']:.0%}"
        + (f"  ERRORS {result.errors}" if result.errors else "")
        + (
            f"  connected {ready['connected']}/{connections}"
            if ready["connected"] < connections
            else ""
        ),
        flush=True,
    )
    if target == "chargeops":
        print(
            f"    event loop thread {row['loop_thread_cpu_util']:.0%} of a core; "
            f"{row['commits_per_s']:.0f} group commits/s, {row['write_sets_per_commit']:.1f} "
            f"write sets each, {row['commit_ms']:.2f} ms each"
        )
    if result.first_error:
        print(f"    first error: {result.first_error}")
    if ready["first_failure"]:
        print(f"    first connect failure: {ready['first_failure']}")
    for line in info.get("server_errors", []):
        print(f"    server log: {line}")
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = start_run(args.pin, args.versions, args.messages)
    print(
        f"closed loop, 1 CALL outstanding per connection; warm-up {args.warmup:g} s, measured "
        f"{args.seconds:g} s, median of {args.repeat} run(s); {args.client_procs} load process(es) "
        f"({'uvloop' if args.client_uvloop else 'asyncio'}); echo on "
        f"{'uvloop' if args.uvloop else 'asyncio'}; ChargeOps: chargeops serve (uvloop), "
        f"SQLite, validation on, events durable before CALLRESULT"
        + ("" if args.keep_rate_limit else ", per-charger frame rate limit raised")
    )
    print("frames sent were validated against the ocpp library's JSON schemas")
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for connections in args.connections:
        for version in args.versions:
            for kind in args.messages:
                runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
                for _ in range(args.repeat):
                    # Interleaved, so that a noisy neighbour hurts both targets alike.
                    if "echo" in args.targets:
                        runs.setdefault(("echo", "-"), []).append(
                            run_one("echo", version, kind, connections, "-", args, plan)
                        )
                    for target in ("floor", "chargeops"):
                        if target not in args.targets:
                            continue
                        for sync in args.synchronous:
                            runs.setdefault((target, sync), []).append(
                                run_one(target, version, kind, connections, sync, args, plan)
                            )
                rows.extend(median_row(r) for r in runs.values())
    print(f"\ntotal {time.monotonic() - started:.0f} s\n")
    report(rows)
    if args.profile:
        for row in rows:
            if row.get("profile") and not row.get("profile_error"):
                print(
                    f"\nprofile of ChargeOps {row['synchronous']}, {row['connections']} conns, "
                    f"OCPP {row['version']} {row['message']} ({row['profile']}):"
                )
                path = Path(row["profile"])
                print(summarize_pstats(path) if path.suffix == ".pstats" else summarize(path))
            elif row.get("profile_error"):
                print(f"py-spy failed: {row['profile_error']}")
    write_json(args.json, {"args": vars(args), "rows": rows})


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every run's throughput attached."""
    ordered = sorted(runs, key=lambda r: r["msgs_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs_msgs_per_s"] = [round(r["msgs_per_s"]) for r in runs]
    return row


def workload(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a run measured: (connections, OCPP version, message); targets are compared on it."""
    return (row["connections"], row["version"], row["message"])


def floor_table(
    floors: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    echo: dict[tuple[Any, ...], dict[str, Any]],
    fmt: Callable[[dict[str, Any] | None], list[str]],
) -> str:
    """The floor against the echo ceiling, and ChargeOps against the floor."""
    ours = {(*workload(r), r["synchronous"]): r for r in rows if r["target"] == "chargeops"}

    def share(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
        return f"{a['msgs_per_s'] / b['msgs_per_s']:.0%}" if a and b and b["msgs_per_s"] else "-"

    out = [
        [
            *workload(f),
            f["synchronous"],
            *fmt(f),
            share(f, echo.get(workload(f))),
            share(ours.get((*workload(f), f["synchronous"])), f),
        ]
        for f in floors
    ]
    headers = ["conns", "OCPP", "message", "sync", "floor msg/s", "p50 ms", "p99 ms"]
    headers += ["CPU us/msg", "srv CPU", "floor/echo", "ChargeOps/floor"]
    return table(headers, out)


def report(rows: list[dict[str, Any]]) -> None:
    def fmt(row: dict[str, Any] | None) -> list[str]:
        if row is None:
            return ["-"] * 5
        return [
            f"{row['msgs_per_s']:.0f}",
            ms(row["p50_ms"] / 1000),
            ms(row["p99_ms"] / 1000),
            f"{row['server_cpu_us_per_msg']:.1f}",
            f"{row['server_cpu_util']:.0%}",
        ]

    echo = {workload(r): r for r in rows if r["target"] == "echo"}
    out = []
    for r in rows:
        if r["target"] != "chargeops":
            continue
        e = echo.get(workload(r))
        ratio = f"{r['msgs_per_s'] / e['msgs_per_s']:.0%}" if e and e["msgs_per_s"] else "-"
        cpu_ratio = (
            f"{r['server_cpu_us_per_msg'] / e['server_cpu_us_per_msg']:.1f}x"
            if e and e["server_cpu_us_per_msg"]
            else "-"
        )
        out.append(
            [
                r["connections"],
                r["version"],
                r["message"],
                r["synchronous"],
                *fmt(r),
                *fmt(e),
                ratio,
                cpu_ratio,
            ]
        )
    floors = [r for r in rows if r["target"] == "floor"]
    if not out and not floors:
        out = [
            [r["connections"], r["version"], r["message"], "-", *fmt(None), *fmt(r), "-", "-"]
            for r in rows
        ]
    headers = [
        "conns",
        "OCPP",
        "message",
        "sync",
        "ChargeOps msg/s",
        "p50 ms",
        "p99 ms",
        "CPU us/msg",
        "srv CPU",
        "echo msg/s",
        "p50 ms",
        "p99 ms",
        "CPU us/msg",
        "srv CPU",
        "ChargeOps/echo",
        "CPU/msg ratio",
    ]
    if out:
        print(table(headers, out))
    if floors:
        print(("\n" if out else "") + floor_table(floors, rows, echo, fmt))
    print(
        "\nCPU us/msg = user+sys seconds of the server process in the window / messages answered;"
        " srv CPU = share of one core. Target (information only): ChargeOps >= 35% of echo at "
        "100 connections."
    )
    saturated = [r for r in rows if r["client_cpu_util"] > 0.9]
    if saturated:
        print(
            "note: the load process used > 90% of its core in "
            f"{len(saturated)} run(s); those figures may be bounded by the load generator."
        )
    bad = [r for r in rows if r["call_errors"] or r["connected"] < r["connections"]]
    for r in bad:
        print(
            f"WARNING: {r['target']} {r['connections']} {r['version']} {r['message']}: "
            f"errors {r['call_errors']}, connected {r['connected']}/{r['connections']}"
        )


if __name__ == "__main__":
    main()
