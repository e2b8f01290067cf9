"""Idle chargers held by one ChargeOps process: RSS per connection.

Registers ``--count`` profile-0 chargers (rows written with SQLAlchemy Core before the
server starts: the HTTP API would hash and commit them one by one), connects them from
several load processes (each charger sends a BootNotification), then holds them for
``--hold`` seconds while each heartbeats every ``--heartbeat-interval`` seconds (random
phase). Prints the server's RSS before and after, RSS per connection, heartbeat latency
(a long full garbage collection or any other loop stall shows up in its max) and server
CPU while idle. It only measures.

    .venv/bin/python tests/bench/idle_connections.py                  # 20,000 chargers
    .venv/bin/python tests/bench/idle_connections.py --count 2000 --hold 20 --echo

The open-file limit here is 20,000 per process (hard). The script tries to raise the
server's limit (prlimit); where that is not allowed it holds as many as fit (limit minus
a reserve for the database and listening sockets) unless ``--no-clamp``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import psutil
from benchlib import (
    ChargeOpsServer,
    EchoServer,
    LoadGenerator,
    Phase,
    bench_ids,
    percentile,
    sleep_until,
    start_run,
    system_busy_seconds,
    table,
    write_json,
)

FD_RESERVE = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=20000, help="chargers (default 20000)")
    p.add_argument("--procs", type=int, default=0, help="load processes (default count/5000)")
    p.add_argument("--hold", type=float, default=30.0, help="seconds held after connecting (30)")
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=60.0,
        help="seconds per charger (60); 0 = none, only the server's WebSocket pings",
    )
    p.add_argument("--version", choices=("1.6", "2.0.1"), default="1.6")
    p.add_argument("--boot", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--connect-concurrency", type=int, default=100, help="per load process")
    p.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    p.add_argument("--clamp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--echo",
        action="store_true",
        help="also hold the same connections on the bare websockets echo server (baseline)",
    )
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.procs <= 0:
        args.procs = max(1, math.ceil(args.count / 5000))
    return args


def fd_room(proc: psutil.Process, wanted: int) -> tuple[int, str]:
    """Raise the process's open-file limit if allowed; returns (room for sockets, note)."""
    soft, hard = proc.rlimit(psutil.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE + proc.num_fds()
    note = f"open-file limit {soft} (hard {hard})"
    if need > soft:
        try:
            proc.rlimit(psutil.RLIMIT_NOFILE, (need, max(need, hard)))
            soft, hard = proc.rlimit(psutil.RLIMIT_NOFILE)
            note = f"open-file limit raised to {soft}"
        except (psutil.AccessDenied, ValueError, OSError) as exc:
            try:
                proc.rlimit(psutil.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (psutil.AccessDenied, ValueError, OSError):
                pass
            note += f"; raising it is not allowed here ({type(exc).__name__})"
    return soft - proc.num_fds() - FD_RESERVE, note


def mb(n: float) -> str:
    return f"{n / 2**20:.1f}"


def hold(target: str, args: argparse.Namespace, plan: Any, ids: list[str]) -> dict[str, Any]:
    server: ChargeOpsServer | EchoServer
    row: dict[str, Any] = {"target": target}
    if target == "chargeops":
        server = ChargeOpsServer(synchronous=args.synchronous, cpus=plan.server)
        server.migrate()
        started = time.monotonic()
        server.seed_chargers(ids)
        row["seed_seconds"] = time.monotonic() - started
        server.start()
        ps = server.ps
        assert ps is not None
    else:
        server = EchoServer(use_uvloop=True, cpus=plan.server)
        ps = server.ps
    try:
        room, note = fd_room(ps, len(ids))
        row["fd_note"] = note
        if len(ids) > room and args.clamp:
            row["clamped_from"] = len(ids)
            ids = ids[: max(0, room)]
        print(f"  {target}: {note}; connecting {len(ids)} chargers from {args.procs} processes")
        time.sleep(2.0)
        rss_base = server.rss()
        fds_base = ps.num_fds()
        with LoadGenerator(
            port=server.ocpp_port,
            version=args.version,
            kind="heartbeat",
            charger_ids=ids,
            procs=args.procs,
            cpus=plan.client,
            boot=args.boot,
            connect_concurrency=args.connect_concurrency,
            connect_timeout=120.0,
        ) as load:
            ready = load.wait_ready(900)
            held = ready["connected"]
            print(
                f"    {held}/{len(ids)} connected in {ready['connect_seconds']:.1f} s "
                f"({held / max(ready['connect_seconds'], 1e-9):.0f}/s"
                + (", with BootNotification" if args.boot else "")
                + ")"
                + (
                    f"; failures {ready['failures']}: {ready['first_failure']}"
                    if ready["failures"]
                    else ""
                ),
                flush=True,
            )
            time.sleep(3.0)
            rss_connected = server.rss()
            go = time.monotonic() + 0.1
            # Interval 0: no heartbeats at all (only the server's WebSocket pings).
            phase = Phase(go, go + args.hold, args.heartbeat_interval or 1e9)
            load.start_phase(phase)
            cpu0, busy0, lcpu0 = server.cpu_seconds(), system_busy_seconds(), load.cpu_seconds()
            peak = rss_connected
            while time.monotonic() < phase.end:
                sleep_until(min(phase.end, time.monotonic() + 1.0))
                peak = max(peak, server.rss())
            cpu1, busy1, lcpu1 = server.cpu_seconds(), system_busy_seconds(), load.cpu_seconds()
            result = load.collect(120)
            rss_end = server.rss()
            fds_end = ps.num_fds()
            client_rss = load.rss()
            # SIGTERM while every charger is still connected: a real shutdown.
            stop_started = time.monotonic()
            row["server_exit"] = server.stop(180)
            row["stop_seconds"] = time.monotonic() - stop_started
    finally:
        if isinstance(server, ChargeOpsServer):
            errors = server.error_lines()
            server.stop()
            if errors:
                row["server_errors"] = errors
            server.cleanup()
        else:
            server.stop()
    lat = result.sorted_latencies(["heartbeat"])
    denominator = max(held, 1)
    row.update(
        {
            "attempted": len(ids),
            "held": held,
            "open_at_end": result.open_connections,
            "connect_seconds": ready["connect_seconds"],
            "connect_failures": ready["failures"],
            "rss_base_mb": rss_base / 2**20,
            "rss_connected_mb": rss_connected / 2**20,
            "rss_end_mb": rss_end / 2**20,
            "rss_peak_mb": peak / 2**20,
            "kb_per_connection": (rss_end - rss_base) / denominator / 1024,
            "kb_per_connection_connected": (rss_connected - rss_base) / denominator / 1024,
            "fds_per_connection": (fds_end - fds_base) / denominator,
            "heartbeats": len(lat),
            "heartbeat_p50_ms": percentile(lat, 0.5) * 1000,
            "heartbeat_p99_ms": percentile(lat, 0.99) * 1000,
            "heartbeat_max_ms": (lat[-1] if lat else math.nan) * 1000,
            "server_cpu_util": (cpu1 - cpu0) / args.hold,
            "other_cpu_util": max(0.0, busy1 - busy0 - (cpu1 - cpu0) - (lcpu1 - lcpu0)) / args.hold,
            "load_rss_mb": client_rss / 2**20,
            "errors": result.errors,
            "first_error": result.first_error,
            "server_calls": result.server_calls,
        }
    )
    print(
        f"    RSS {mb(rss_base)} MB idle -> {mb(rss_connected)} MB connected -> "
        f"{mb(rss_end)} MB after {args.hold:g} s (peak {mb(peak)} MB): "
        f"{row['kb_per_connection']:.1f} KB per connection; heartbeats "
        f"{len(lat)} p50 {row['heartbeat_p50_ms']:.1f} ms p99 {row['heartbeat_p99_ms']:.1f} ms "
        f"max {row['heartbeat_max_ms']:.1f} ms; server CPU {row['server_cpu_util']:.0%}; "
        f"{result.open_connections} still open; SIGTERM -> exit {row.get('server_exit')} in "
        f"{row['stop_seconds']:.1f} s"
        + (f"; ERRORS {result.errors}: {result.first_error}" if result.errors else ""),
        flush=True,
    )
    for line in row.get("server_errors", []):
        print(f"    server log: {line}")
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = start_run(args.pin, [args.version], ["heartbeat", "boot"])
    print(
        f"{args.count} profile-0 chargers, OCPP {args.version}, {args.procs} load processes, "
        f"held {args.hold:g} s, one Heartbeat per charger every {args.heartbeat_interval:g} s"
    )
    ids = bench_ids(args.count, "IDLE")
    rows = [hold("chargeops", args, plan, ids)]
    if args.echo:
        rows.append(hold("echo", args, plan, bench_ids(args.count, "IDLE")))
    print()
    print(
        table(
            [
                "server",
                "held",
                "RSS idle MB",
                "RSS held MB",
                "KB/conn",
                "connect s",
                "HB p50 ms",
                "HB p99 ms",
                "HB max ms",
                "srv CPU",
            ],
            [
                [
                    r["target"],
                    r["held"],
                    f"{r['rss_base_mb']:.0f}",
                    f"{r['rss_end_mb']:.0f}",
                    f"{r['kb_per_connection']:.1f}",
                    f"{r['connect_seconds']:.1f}",
                    f"{r['heartbeat_p50_ms']:.1f}",
                    f"{r['heartbeat_p99_ms']:.1f}",
                    f"{r['heartbeat_max_ms']:.1f}",
                    f"{r['server_cpu_util']:.0%}",
                ]
                for r in rows
            ],
        )
    )
    print(
        "\nKB/conn = (RSS after holding - RSS before connecting) / connections held. "
        "HB = Heartbeat CALL -> CALLRESULT while holding."
    )
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
