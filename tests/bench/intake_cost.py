"""CPU cost of the work-order intake per event, without sockets.

Builds the all-in-one system on a fresh SQLite file (as ``chargeops serve`` would), seeds
``--chargers`` chargers (ChargerBooted + ChargerOnline), then hands the intake the events
csms publishes for flapping connectors, in pages as the embedded bus does: per cycle and
charger a status change to Faulted, its FaultRaised, a status change back to Available and
its FaultCleared. Every Faulted opens, reopens or appends to an order with SLA clocks;
every Available resolves it; after a few flips a Flapping order opens. The intake is driven
directly (``handle_batch``), so the figures are the intake's own: CPU of the whole process
per event (event loop + writer thread), wall time, transactions.

    .venv/bin/python tests/bench/intake_cost.py
    .venv/bin/python tests/bench/intake_cost.py --chargers 200 --cycles 10 --profile out.prof

It only measures; ``--profile`` writes a cProfile of the measured part (all threads are
not covered: cProfile sees the thread that runs the intake's transactions only when the
committer runs them there, so read it for proportions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib import table

from services.bus.contracts import (
    ChargerBooted,
    ChargerOnline,
    ConnectorRef,
    ConnectorStatusChanged,
    Event,
    FaultCleared,
    FaultRaised,
    NormalizedStatus,
    Severity,
)
from services.db import table_of, utcnow
from services.settings import Settings
from services.wiring import build_all_in_one
from ticketing.tables import Technician
from ticketing.work_orders import store


def boot(charger_id: str) -> list[Event]:
    now = utcnow()
    return [
        ChargerBooted(
            charger_id=charger_id,
            received_at=now,
            vendor="Bench",
            model="Flapper",
            firmware_version="1.0",
            ocpp_version="1.6",
            registration_status="Accepted",
        ),
        ChargerOnline(charger_id=charger_id, received_at=now, ocpp_version="1.6"),
    ]


def flap(charger_id: str) -> list[Event]:
    """What csms publishes for Available -> Faulted (GroundFailure) -> Available."""
    common = {
        "charger_id": charger_id,
        "received_at": utcnow(),
        "connector": ConnectorRef(connector_id=1),
    }
    faulted, available = NormalizedStatus.faulted, NormalizedStatus.available
    events: list[Event] = []
    for status, previous, fault, severity in (
        (faulted, available, FaultRaised, Severity.critical),
        (available, faulted, FaultCleared, Severity.info),
    ):
        raw = status.value.capitalize()
        code = "GroundFailure" if status is faulted else "NoError"
        events.append(
            ConnectorStatusChanged(
                **common, status=status, raw_status=raw, previous_status=previous, error_code=code
            )
        )
        events.append(
            fault(
                **common,
                source="status_notification",
                error_code="GroundFailure",
                severity=severity,
                status=status,
            )
        )
    return events


#: every skill the default fault rules ask for
SKILLS = [
    "ac_electrical",
    "connector_replacement",
    "dc_high_voltage",
    "firmware",
    "general",
    "network",
    "payment_terminal",
]


def pages(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


async def measure(args: argparse.Namespace, db_dir: Path) -> dict[str, float]:
    settings = Settings(
        _env_file=None,
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_dir / 'intake.db'}",
        ocpp_host="127.0.0.1",
        ocpp_port=0,
        http_host="127.0.0.1",
        http_port=0,
        ticketing_scan_interval=3600,
        intake_transaction_budget_ms=args.budget_ms,
    )
    system = await build_all_in_one(settings)
    await system.start()
    try:
        assert system.ticketing is not None
        intake = system.ticketing.intake
        if args.technicians:
            async with system.db.engine.begin() as conn:
                await conn.execute(
                    table_of(Technician).insert(),
                    [
                        {
                            "name": f"Tech {i}",
                            "skills": SKILLS,
                            "regions": ["*"],
                            "sites": [],
                            "on_duty": True,
                            "max_concurrent": 5,
                            "created_at": utcnow(),
                        }
                        for i in range(args.technicians)
                    ],
                )
        ids = [f"BENCH-INTAKE-{i:05d}" for i in range(args.chargers)]
        for page in pages([e for cid in ids for e in boot(cid)], args.page):
            await intake.handle_batch(page)
        transactions = 0
        real_run = store.run

        async def counting_run(*a: object, **kw: object) -> object:
            nonlocal transactions
            transactions += 1
            return await real_run(*a, **kw)  # type: ignore[arg-type]

        store.run = counting_run  # type: ignore[assignment]
        # Interleaved as the bus sees them: every charger's frame before the next frame.
        events: list[Event] = []
        for _ in range(args.cycles):
            per_charger = [flap(cid) for cid in ids]
            for step in range(4):
                events.extend(cycle[step] for cycle in per_charger)
        profiler = cProfile.Profile() if args.profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for page in pages(events, args.page):
            await intake.handle_batch(page)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        store.run = real_run
        return {
            "events": len(events),
            "cpu_s": cpu,
            "wall_s": wall,
            "transactions": transactions,
        }
    finally:
        await system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=10, help="flaps per charger")
    parser.add_argument(
        "--technicians", type=int, default=0, help="on-duty technicians (network-wide, every skill)"
    )
    parser.add_argument("--page", type=int, default=50, help="events per intake page")
    parser.add_argument("--budget-ms", type=float, default=5.0, help="intake transaction budget")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", help="write a cProfile of the measured part here")
    args = parser.parse_args()
    rows = []
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="chargeops-intake-") as tmp:
            r = asyncio.run(measure(args, Path(tmp)))
        rows.append(
            [
                run + 1,
                int(r["events"]),
                f"{r['cpu_s'] / r['events'] * 1e3:.2f}",
                f"{r['events'] / r['wall_s']:.0f}",
                int(r["transactions"]),
            ]
        )
    print(
        f"intake: {args.chargers} chargers x {args.cycles} flaps (4 events each), "
        f"{args.technicians} technicians, pages of {args.page}, budget {args.budget_ms} ms"
    )
    print(table(["run", "events", "CPU ms/event", "events/s", "transactions"], rows))


if __name__ == "__main__":
    main()
