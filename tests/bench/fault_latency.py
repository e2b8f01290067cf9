"""Fault-to-durable latency at 1,000 connections.

Each charge point alternates a Faulted StatusNotification (1.6: errorCode GroundFailure;
2.0.1: connectorStatus Faulted) and an Available one, so every Faulted frame raises a
FaultRaised event (and every Available frame a FaultCleared). ChargeOps answers only
after the event is committed (outbox row in the group commit), so the time from sending
the Faulted frame to receiving its CALLRESULT bounds "fault to durable event". Printed:
p50/p99/max for Faulted frames per offered load, and a durability check afterwards:
FaultRaised rows in the outbox >= Faulted frames answered. It only measures.

    .venv/bin/python tests/bench/fault_latency.py                         # 1000 conns
    .venv/bin/python tests/bench/fault_latency.py --rates 1000,max --version 1.6

``--rates``: aggregate frames/s offered by all connections together (each connection
paced, random phase, one CALL outstanding), or ``max`` for closed loop (saturation: then
latency is simply connections / throughput).

Target (for information): p99 under 50 ms at 1,000 connections.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from benchlib import (
    ChargeOpsServer,
    LoadGenerator,
    Phase,
    bench_ids,
    ms,
    percentile,
    sleep_until,
    start_run,
    system_busy_seconds,
    table,
    write_json,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=1000, help="default 1000")
    p.add_argument("--version", default="both", help="1.6, 2.0.1 or both (default both)")
    p.add_argument(
        "--rates",
        default="200,1000,max",
        help="comma list of offered frames/s (all connections) or max (default 200,1000,max)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate (10)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per rate (3)")
    p.add_argument("--synchronous", default="FULL", help="FULL, NORMAL or both (default FULL)")
    p.add_argument("--client-procs", type=int, default=1, help="load processes (default 1)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--register",
        choices=("api", "db"),
        default="api",
        help="POST /api/v1/chargers (api, default) or registry rows written before start (db)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    args.versions = ["1.6", "2.0.1"] if args.version == "both" else [args.version]
    args.rate_list = [
        0.0 if r.strip() == "max" else float(r) for r in args.rates.split(",") if r.strip()
    ]
    args.sync_list = (
        ["FULL", "NORMAL"] if args.synchronous.lower() == "both" else [args.synchronous.upper()]
    )
    return args


def outbox_count(server: ChargeOpsServer, event_type: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{server.db_path}")
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM bus_outbox WHERE type = :t"), {"t": event_type}
        ).scalar_one()
    engine.dispose()
    return int(n)


def histogram_quantiles(
    before: dict[str, float], after: dict[str, float], name: str, qs: tuple[float, ...]
) -> tuple[int, list[float]]:
    """Observations of histogram ``name`` between two /metrics samples, and quantile
    estimates (linear within a bucket, as Prometheus' histogram_quantile does)."""
    buckets: list[tuple[float, float]] = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            bound = math.inf if le == "+Inf" else float(le)
            buckets.append((bound, value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    estimates = []
    for q in qs:
        rank, lower, below = q * total, 0.0, 0.0
        estimate = math.nan
        for bound, cumulative in buckets:
            if cumulative >= rank and total > 0:
                if math.isinf(bound):
                    estimate = lower
                else:
                    inside = cumulative - below
                    estimate = lower + (bound - lower) * ((rank - below) / inside if inside else 1)
                break
            lower, below = bound, cumulative
        estimates.append(estimate)
    return int(total), estimates


def run_version(
    version: str, sync: str, args: argparse.Namespace, plan: Any
) -> list[dict[str, Any]]:
    ids = bench_ids(args.connections, "FAULT")
    rows: list[dict[str, Any]] = []
    answered = {"fault": 0, "clear": 0}
    with ChargeOpsServer(synchronous=sync, cpus=plan.server) as server:
        server.migrate()
        if args.register == "db":
            server.seed_chargers(ids)
            server.start()
        else:
            server.start()
            seconds = server.register_via_api(ids)
            print(f"  registered {len(ids)} chargers via the HTTP API in {seconds:.1f} s")
        with LoadGenerator(
            port=server.ocpp_port,
            version=version,
            kind="fault",
            charger_ids=ids,
            procs=args.client_procs,
            cpus=plan.client,
        ) as load:
            ready = load.wait_ready(300)
            print(
                f"  OCPP {version}, {sync}: {ready['connected']}/{args.connections} connected in "
                f"{ready['connect_seconds']:.1f} s"
                + (f" (failures {ready['failures']})" if ready["failures"] else "")
            )
            for rate in args.rate_list:
                interval = args.connections / rate if rate > 0 else 0.0
                go = time.monotonic() + 0.1
                phase = Phase(go + args.warmup, go + args.warmup + args.seconds, interval)
                load.start_phase(phase)
                sleep_until(phase.start)
                cpu0, busy0, lcpu0 = server.cpu_seconds(), system_busy_seconds(), load.cpu_seconds()
                metrics0 = server.metrics()
                sleep_until(phase.end)
                cpu1, busy1, lcpu1 = server.cpu_seconds(), system_busy_seconds(), load.cpu_seconds()
                metrics1 = server.metrics()
                result = load.collect(args.seconds + 60)
                backlog = metrics1.get(
                    'chargeops_bus_outbox_backlog{consumer="ticketing.work-orders"}', math.nan
                )
                orders_n, (order_p50, order_p99) = histogram_quantiles(
                    metrics0, metrics1, "chargeops_fault_to_order_seconds", (0.5, 0.99)
                )
                for tag in answered:
                    answered[tag] += result.completed.get(tag, 0)
                faults = result.sorted_latencies(["fault"])
                clears = result.sorted_latencies(["clear"])
                total = len(faults) + len(clears)
                server_cpu = cpu1 - cpu0
                row = {
                    "version": version,
                    "synchronous": sync,
                    "connections": ready["connected"],
                    "offered_per_s": rate if rate > 0 else "max",
                    "answered_per_s": total / args.seconds,
                    "faults": len(faults),
                    "fault_p50_ms": percentile(faults, 0.5) * 1000,
                    "fault_p99_ms": percentile(faults, 0.99) * 1000,
                    "fault_max_ms": (faults[-1] if faults else math.nan) * 1000,
                    "clear_p99_ms": percentile(clears, 0.99) * 1000,
                    "server_cpu_util": server_cpu / args.seconds,
                    "other_cpu_util": max(0.0, busy1 - busy0 - server_cpu - (lcpu1 - lcpu0))
                    / args.seconds,
                    "fault_to_order_n": orders_n,
                    "fault_to_order_p50_ms": order_p50 * 1000,
                    "fault_to_order_p99_ms": order_p99 * 1000,
                    "work_order_backlog_at_end": backlog,
                    "errors": result.errors,
                    "first_error": result.first_error,
                }
                rows.append(row)
                print(
                    f"    offered {row['offered_per_s']}/s: answered {row['answered_per_s']:.0f}/s,"
                    f" Faulted p50 {row['fault_p50_ms']:.1f} ms p99 {row['fault_p99_ms']:.1f} ms "
                    f"max {row['fault_max_ms']:.1f} ms, server CPU {row['server_cpu_util']:.0%}, "
                    f"other CPU {row['other_cpu_util']:.0%}; fault -> work order "
                    f"p50 {order_p50 * 1000:.0f} ms p99 {order_p99 * 1000:.0f} ms "
                    f"(n {orders_n}), consumer backlog at end {backlog:.0f}"
                    + (f", ERRORS {result.errors}: {result.first_error}" if result.errors else ""),
                    flush=True,
                )
        server.stop()
        raised = outbox_count(server, "FaultRaised")
        cleared = outbox_count(server, "FaultCleared")
        ok = raised >= answered["fault"] and cleared >= answered["clear"]
        print(
            f"  durability: {answered['fault']} Faulted frames answered, {raised} FaultRaised in "
            f"the outbox; {answered['clear']} Available answered, {cleared} FaultCleared: "
            + ("OK" if ok else "MISSING EVENTS")
        )
        for row in rows:
            row["durable_check"] = {"answered": answered, "raised": raised, "cleared": cleared}
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = start_run(args.pin, args.versions, ["fault"])
    print(
        f"{args.connections} connections; each alternates Faulted / Available; warm-up "
        f"{args.warmup:g} s and {args.seconds:g} s measured per offered rate"
    )
    rows: list[dict[str, Any]] = []
    for version in args.versions:
        for sync in args.sync_list:
            rows.extend(run_version(version, sync, args, plan))
    print()
    print(
        table(
            [
                "OCPP",
                "sync",
                "conns",
                "offered/s",
                "answered/s",
                "Faulted n",
                "p50 ms",
                "p99 ms",
                "max ms",
                "srv CPU",
                "other CPU",
            ],
            [
                [
                    r["version"],
                    r["synchronous"],
                    r["connections"],
                    r["offered_per_s"],
                    f"{r['answered_per_s']:.0f}",
                    r["faults"],
                    ms(r["fault_p50_ms"] / 1000),
                    ms(r["fault_p99_ms"] / 1000),
                    ms(r["fault_max_ms"] / 1000),
                    f"{r['server_cpu_util']:.0%}",
                    f"{r['other_cpu_util']:.0%}",
                ]
                for r in rows
            ],
        )
    )
    print(
        "\nlatency = send of the Faulted StatusNotification -> its CALLRESULT (sent only after "
        "the FaultRaised event is committed). Target (information only): p99 < 50 ms at 1,000 "
        "connections. 'max' is closed loop: latency = connections / throughput."
    )
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
