"""Shared machinery of the benchmark scripts in this folder (not a test module).

* :class:`ChargeOpsServer` runs ``chargeops serve`` as a subprocess on a fresh SQLite file
  (127.0.0.1 only), seeds or registers chargers, reads the process's CPU time and RSS
  from psutil and stops it with SIGTERM.
* :class:`EchoServer` runs the ceiling: bare ``websockets`` + orjson in a subprocess that
  answers every CALL with ``[3, id, {}]``.
* :class:`OcppClient` is a minimal RFC 6455 client (asyncio ``Protocol``, masked text
  frames, pong on ping, no extensions) that speaks real OCPP-J frames, callback driven, so
  that one load core can saturate a server core. Frames are checked against the JSON
  schemas shipped with the ``ocpp`` library by :func:`self_check`.
* :func:`run_load` spreads connections over worker processes (``multiprocessing``),
  which connect, report ready, then run phases (closed loop, or paced at a given
  interval per connection) on a measurement window set by the parent process.

Decision: the clients are not the ``ocpp`` library's ``ChargePoint`` (its per-message
validation and coroutine machinery would make the load generator, not the server, the
bottleneck on a 2-core machine); the frames they send are the same OCPP-J bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import psutil

HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
VENV_BIN = Path(sys.executable).parent
FORK = mp.get_context("fork")


# ------------------------------------------------------------------ CPUs and processes
@dataclass(frozen=True)
class CpuPlan:
    server: frozenset[int] | None
    client: frozenset[int] | None

    def describe(self) -> str:
        if self.server is None:
            return "not pinned"
        return (
            f"server pinned to CPU {sorted(self.server)}, load generator and driver to CPU "
            f"{sorted(self.client or ())} (os.sched_setaffinity)"
        )


def cpu_plan(pin: bool) -> CpuPlan:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return CpuPlan(None, None)
    return CpuPlan(frozenset(cpus[:1]), frozenset(cpus[1:]))


@contextlib.contextmanager
def inherited_affinity(cpus: frozenset[int] | None) -> Iterator[None]:
    """Children forked inside this block start on ``cpus`` (and so do their threads)."""
    if cpus is None:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def loop_thread_cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds of a process's main thread (the event loop), from /proc."""
    for t in proc.threads():
        if t.id == proc.pid:
            return float(t.user_time + t.system_time)
    return math.nan


def system_busy_seconds() -> float:
    """CPU seconds every CPU of the machine spent busy (all processes, kernel included)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def new_event_loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_async(coro: Any, use_uvloop: bool) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop_factory(use_uvloop)) as runner:
        return runner.run(coro)


def bench_ids(count: int, prefix: str = "BENCH") -> list[str]:
    """A fresh random charger id set (so no run sees another run's state)."""
    run = secrets.token_hex(3).upper()
    return [f"{prefix}-{run}-{i:05d}" for i in range(count)]


# ------------------------------------------------------------------ the ChargeOps server
class ServerFailed(RuntimeError):
    pass


class ChargeOpsServer:
    """``chargeops serve`` on a fresh SQLite database in a temporary folder."""

    def __init__(
        self,
        *,
        synchronous: str = "FULL",
        cpus: frozenset[int] | None = None,
        extra_env: dict[str, str] | None = None,
        keep_rate_limit: bool = False,
        workdir: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="chargeops-bench-"))
        self.db_path = self.dir / "bench.db"
        self.log_path = self.dir / "server.log"
        self.ocpp_port = free_port()
        self.http_port = free_port()
        self.admin_token = secrets.token_urlsafe(24)
        self.cpus = cpus
        self.synchronous = synchronous
        self.command = list(command or [str(VENV_BIN / "chargeops"), "serve"])
        self.env = {
            **os.environ,
            "CHARGEOPS_ENVIRONMENT": "test",
            "CHARGEOPS_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
            "CHARGEOPS_OCPP_HOST": HOST,
            "CHARGEOPS_OCPP_PORT": str(self.ocpp_port),
            "CHARGEOPS_HTTP_HOST": HOST,
            "CHARGEOPS_HTTP_PORT": str(self.http_port),
            "CHARGEOPS_ADMIN_TOKEN": self.admin_token,
            "CHARGEOPS_LOG_LEVEL": "WARNING",
            "CHARGEOPS_SQLITE_SYNCHRONOUS": synchronous,
        }
        if not keep_rate_limit:
            # The per-charger token bucket (200 frames/s) is a production guard; a load test
            # drives each connection far harder on purpose. Its check still runs.
            self.env["CHARGEOPS_FRAMES_PER_SECOND"] = "1000000"
            self.env["CHARGEOPS_FRAME_BURST"] = "1000000"
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self._log_file: Any = None

    # -- lifecycle
    def migrate(self) -> None:
        result = subprocess.run(
            [str(VENV_BIN / "chargeops"), "migrate"],
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ServerFailed(f"chargeops migrate failed:\n{result.stderr.decode()[-3000:]}")

    def seed_chargers(self, ids: Sequence[str], security_profile: int = 0) -> None:
        """Insert registry rows directly (SQLAlchemy Core), before the server starts."""
        from sqlalchemy import create_engine, insert

        from csms.tables import Charger
        from services.db import table_of

        now = datetime.now(UTC)
        engine = create_engine(f"sqlite:///{self.db_path}")
        rows = [
            {
                "id": cid,
                "password_hash": None,
                "security_profile": security_profile,
                "registration_status": "accepted",
                "enabled": True,
                "created_at": now,
                "updated_at": now,
            }
            for cid in ids
        ]
        with engine.begin() as conn:
            for i in range(0, len(rows), 5000):
                conn.execute(insert(table_of(Charger)), rows[i : i + 5000])
        engine.dispose()

    def start(self, ready_timeout: float = 90.0) -> None:
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        with inherited_affinity(self.cpus):
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ps = psutil.Process(self.proc.pid)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.http_port}/readyz"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerFailed(f"chargeops serve exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ServerFailed(f"chargeops serve not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def register_via_api(self, ids: Sequence[str], concurrency: int = 16) -> float:
        """POST /api/v1/chargers for each id (profile 0); returns the seconds it took."""
        import httpx

        async def _register() -> None:
            headers = {"Authorization": f"Bearer {self.admin_token}"}
            limits = httpx.Limits(max_connections=concurrency)
            base = f"http://{HOST}:{self.http_port}"
            queue = list(ids)
            async with httpx.AsyncClient(
                base_url=base, headers=headers, limits=limits, timeout=30
            ) as client:

                async def one_by_one() -> None:
                    while queue:
                        cid = queue.pop()
                        r = await client.post(
                            "/api/v1/chargers", json={"id": cid, "security_profile": 0}
                        )
                        if r.status_code != 201:
                            raise ServerFailed(f"registering {cid}: {r.status_code} {r.text}")

                await asyncio.gather(*(one_by_one() for _ in range(concurrency)))

        started = time.monotonic()
        asyncio.run(_register())
        return time.monotonic() - started

    def stop(self, timeout: float = 30.0) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(10)
        elif self.proc is not None:
            code = self.proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ChargeOpsServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.cleanup()

    # -- observation
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        return cpu_seconds(self.ps)

    def metrics(self) -> dict[str, float]:
        """The server's /metrics, as {"name{labels}": value}."""
        url = f"http://{HOST}:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def loop_thread_cpu_seconds(self) -> float:
        assert self.ps is not None
        return loop_thread_cpu_seconds(self.ps)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def error_lines(self, limit: int = 5) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        lines = [ln for ln in text.splitlines() if "ERROR" in ln or "Traceback" in ln]
        return lines[:limit]


# ------------------------------------------------------------------ the echo ceiling
def _echo_main(port: int, use_uvloop: bool, ready: Any) -> None:
    from websockets.asyncio.server import ServerConnection

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            call = orjson.loads(message)
            await ws.send(orjson.dumps([3, call[1], {}]).decode())

    run_async(serve_bare(handler, port, ready), use_uvloop)


async def serve_bare(handler: Callable[[Any], Awaitable[None]], port: int, ready: Any) -> None:
    """Serve OCPP-J WebSockets with bare `websockets` on HOST:port until killed (the echo
    and floor targets); ``ready`` is set once listening."""
    from websockets.asyncio.server import serve
    from websockets.typing import Subprotocol

    async with serve(
        handler,
        HOST,
        port,
        subprotocols=[Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6")],
        compression=None,
        max_size=256 * 1024,
    ):
        ready.set()
        await asyncio.Event().wait()


def _floor_main(port: int, synchronous: str, ready: Any) -> None:
    from floor_server import serve_floor

    run_async(serve_floor(port, synchronous, ready), True)


def _forked(target: Callable[..., None], cpus: frozenset[int] | None, *args: Any) -> None:
    """In the child: pin it, let SIGTERM end it, run ``target(*args)``."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    target(*args)


class ForkedServer:
    """A server target run as a function in a forked process (echo, floor): called as
    ``target(port, *args, ready)``."""

    name = "server"

    def __init__(
        self, target: Callable[..., None], cpus: frozenset[int] | None, *args: Any
    ) -> None:
        self.port = free_port()
        self.ocpp_port = self.port
        ready = FORK.Event()
        self.proc = FORK.Process(
            target=_forked, args=(target, cpus, self.port, *args, ready), daemon=True
        )
        self.proc.start()
        if not ready.wait(30):
            self.proc.kill()
            raise ServerFailed(f"{self.name} server did not start")
        assert self.proc.pid is not None
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.ps)

    def loop_thread_cpu_seconds(self) -> float:
        return loop_thread_cpu_seconds(self.ps)

    def metrics(self) -> dict[str, float]:
        return {}

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        return self.proc.exitcode

    def __enter__(self) -> ForkedServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class EchoServer(ForkedServer):
    """Bare websockets + orjson: answers each CALL with ``[3, id, {}]``."""

    name = "echo"

    def __init__(self, *, use_uvloop: bool, cpus: frozenset[int] | None) -> None:
        self.use_uvloop = use_uvloop
        super().__init__(_echo_main, cpus, use_uvloop)


class FloorServer(ForkedServer):
    """The least a durable server must do per frame (``floor_server.py``), on uvloop."""

    name = "floor"

    def __init__(self, *, synchronous: str, cpus: frozenset[int] | None) -> None:
        super().__init__(_floor_main, cpus, synchronous)


# ------------------------------------------------------------------ OCPP-J frames
BASE_MS = int(time.time() * 1000)


def iso_ms(ms: int) -> str:
    seconds, rest = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:03d}Z"


KINDS = ("heartbeat", "status", "meter", "mix", "fault", "boot")


def make_call(version: str, kind: str, n: int, seq: int) -> tuple[str, dict[str, Any], str]:
    """(action, payload, tag) of the ``n``-th CALL of a connection for a workload ``kind``.

    ``seq`` makes the charger timestamp unique per message and connection (MeterValues are
    de-duplicated on it). ``status`` alternates a connector between two statuses of
    different normalized state, so every frame writes a state change, a history row and a
    ConnectorStatusChanged event; ``fault`` alternates Faulted and Available.
    """
    if kind == "mix":
        kind = ("heartbeat", "status", "meter")[n % 3]
        n //= 3
    ts = iso_ms(BASE_MS + seq)
    v16 = version == "1.6"
    if kind == "heartbeat":
        return "Heartbeat", {}, "heartbeat"
    if kind == "status":
        if v16:
            status = "Available" if n % 2 == 0 else "Preparing"
            payload: dict[str, Any] = {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": status,
                "timestamp": ts,
            }
        else:
            status = "Available" if n % 2 == 0 else "Occupied"
            payload = {"timestamp": ts, "connectorStatus": status, "evseId": 1, "connectorId": 1}
        return "StatusNotification", payload, "status"
    if kind == "meter":
        wh = 1000.0 + seq
        if v16:
            sample: dict[str, Any] = {
                "value": f"{wh:.1f}",
                "context": "Sample.Periodic",
                "measurand": "Energy.Active.Import.Register",
                "unit": "Wh",
            }
            payload = {
                "connectorId": 1,
                "meterValue": [{"timestamp": ts, "sampledValue": [sample]}],
            }
        else:
            sample = {
                "value": wh,
                "context": "Sample.Periodic",
                "measurand": "Energy.Active.Import.Register",
                "unitOfMeasure": {"unit": "Wh"},
            }
            payload = {"evseId": 1, "meterValue": [{"timestamp": ts, "sampledValue": [sample]}]}
        return "MeterValues", payload, "meter"
    if kind == "fault":
        faulted = n % 2 == 0
        if v16:
            payload = {
                "connectorId": 1,
                "errorCode": "GroundFailure" if faulted else "NoError",
                "status": "Faulted" if faulted else "Available",
                "timestamp": ts,
            }
            if faulted:
                payload.update(vendorId="bench", vendorErrorCode="GF-1", info="bench fault")
        else:
            payload = {
                "timestamp": ts,
                "connectorStatus": "Faulted" if faulted else "Available",
                "evseId": 1,
                "connectorId": 1,
            }
        return "StatusNotification", payload, "fault" if faulted else "clear"
    if kind == "boot":
        if v16:
            payload = {"chargePointVendor": "Bench", "chargePointModel": "Load-1"}
        else:
            payload = {"chargingStation": {"vendorName": "Bench", "model": "Load-1"}}
            payload["reason"] = "PowerUp"
        return "BootNotification", payload, "boot"
    raise ValueError(f"unknown workload {kind!r}")


def self_check(versions: Sequence[str], kinds: Sequence[str]) -> None:
    """Validate the frames this run will send against the ``ocpp`` library's schemas."""
    from importlib import resources

    import jsonschema

    for version in versions:
        folder = "v16" if version == "1.6" else "v201"
        for kind in kinds:
            for n in range(6):
                action, payload, _ = make_call(version, kind, n, n)
                name = action if version == "1.6" else f"{action}Request"
                path = resources.files("ocpp") / folder / "schemas" / f"{name}.json"
                schema = json.loads(path.read_text(encoding="utf-8-sig"))
                jsonschema.validate(payload, schema)


# ------------------------------------------------------------------ the client
def _py_apply_mask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


apply_mask: Callable[[bytes, bytes], bytes]
try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships with websockets wheels
    apply_mask = _py_apply_mask


@dataclass
class Window:
    start: float = math.inf
    end: float = -math.inf


@dataclass
class Stats:
    """Per worker process: completions and latencies (seconds) by tag inside the window."""

    latencies: dict[str, array[float]] = field(default_factory=dict)
    sent_total: int = 0
    completed: dict[str, int] = field(default_factory=dict)  # CALLRESULTs by tag, any time
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    server_calls: int = 0
    unexpected: int = 0
    lost: int = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def record(self, tag: str, latency: float) -> None:
        bucket = self.latencies.get(tag)
        if bucket is None:
            bucket = self.latencies[tag] = array("d")
        bucket.append(latency)

    def error(self, code: str, detail: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if self.first_error is None:
            self.first_error = detail[:500]

    def export(self) -> dict[str, Any]:
        return {
            "latencies": {k: v.tobytes() for k, v in self.latencies.items()},
            "sent_total": self.sent_total,
            "completed": self.completed,
            "errors": self.errors,
            "first_error": self.first_error,
            "server_calls": self.server_calls,
            "unexpected": self.unexpected,
            "lost": self.lost,
        }


class HandshakeFailed(Exception):
    pass


class OcppClient(asyncio.Protocol):
    """One charge point: WebSocket handshake, then one outstanding CALL at a time."""

    def __init__(
        self,
        charger_id: str,
        port: int,
        version: str,
        kind: str,
        stats: Stats,
        window: Window,
        seq_offset: int = 0,
    ) -> None:
        self.charger_id = charger_id
        self.port = port
        self.version = version
        self.kind = kind
        self.stats = stats
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.transport: Any = None  # asyncio's or uvloop's transport (no common subclass)
        self.buf = bytearray()
        self.is_open = False
        self.closed = False
        self._key = b""
        self.n = 0  # CALLs of the workload sent so far
        self.seq = seq_offset
        self.pending_id: str | None = None
        self.pending_tag = ""
        self.sent_at = 0.0
        self.running = False
        self.interval = 0.0  # 0: closed loop; else seconds between CALLs
        self.next_due = 0.0
        self.stop_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.on_idle: Callable[[OcppClient], None] | None = None
        self.one_shot: asyncio.Future[Any] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._key = base64.b64encode(os.urandom(16))
        request = (
            f"GET /ocpp/{self.charger_id} HTTP/1.1\r\n"
            f"Host: {HOST}:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL[self.version]}\r\n"
            "\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.is_open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            self._check_handshake(head)
            if not self.is_open:
                return
        self._read_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.is_open = False
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
        if not self.handshake.done():
            self.handshake.set_exception(HandshakeFailed(f"connection lost: {exc!r}"))
        if self.one_shot is not None and not self.one_shot.done():
            self.one_shot.set_exception(ConnectionError("connection lost"))
        if self.pending_id is not None:
            self.pending_id = None
            self.stats.lost += 1
            self.stats.error("ConnectionLost", f"{self.charger_id}: connection lost ({exc!r})")
        self._idle()

    # -- handshake and frames
    def _check_handshake(self, head: str) -> None:
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            self.handshake.set_exception(HandshakeFailed(lines[0]))
            assert self.transport is not None
            self.transport.close()
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            self.handshake.set_exception(HandshakeFailed("bad Sec-WebSocket-Accept"))
            return
        if headers.get("sec-websocket-protocol") != SUBPROTOCOL[self.version]:
            self.handshake.set_exception(HandshakeFailed("subprotocol not selected"))
            return
        self.is_open = True
        self.handshake.set_result(None)

    def _read_frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b0 = buf[0]
            length = buf[1] & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                pos = 10
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                self._on_message(payload)
            elif opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                if not self.closed:
                    self._send_frame(0x8, payload[:2])
                    assert self.transport is not None
                    self.transport.close()
                return

    def _send_frame(self, opcode: int, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(data)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        mask = random.randbytes(4)
        self.transport.write(header + mask + apply_mask(data, mask))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send_frame(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()

    # -- OCPP
    def call(self, action: str, payload: dict[str, Any], tag: str) -> None:
        self.seq += 1
        message_id = f"{self.seq}"
        self.pending_id = message_id
        self.pending_tag = tag
        self.stats.sent_total += 1
        data = orjson.dumps([2, message_id, action, payload])
        self.sent_at = time.monotonic()
        self._send_frame(0x1, data)

    async def call_once(self, kind: str, timeout: float) -> Any:
        """Send one CALL outside the workload (e.g. BootNotification); returns the reply."""
        action, payload, tag = make_call(self.version, kind, 0, self.seq)
        self.one_shot = self.loop.create_future()
        self.call(action, payload, tag)
        try:
            return await asyncio.wait_for(self.one_shot, timeout)
        finally:
            self.one_shot = None

    def _on_message(self, payload: bytes) -> None:
        now = time.monotonic()
        msg = orjson.loads(payload)
        type_id = msg[0]
        if type_id == 2:
            # A command from the CSMS: this load generator implements none of them.
            self.stats.server_calls += 1
            self._send_frame(
                0x1, orjson.dumps([4, msg[1], "NotImplemented", "bench load client", {}])
            )
            return
        if msg[1] != self.pending_id:
            self.stats.unexpected += 1
            return
        self.pending_id = None
        if self.one_shot is not None:
            if not self.one_shot.done():
                self.one_shot.set_result(msg)
            return
        in_window = self.window.start <= now <= self.window.end
        if type_id == 3:
            tag = self.pending_tag
            self.stats.completed[tag] = self.stats.completed.get(tag, 0) + 1
            if in_window:
                self.stats.record(self.pending_tag, now - self.sent_at)
        else:
            code = str(msg[2]) if len(msg) > 2 else "?"
            self.stats.error(code, f"{self.charger_id}: {payload.decode(errors='replace')}")
        self._next(now)

    # -- workload pacing
    def start(self, interval: float, stop_at: float, first_delay: float = 0.0) -> None:
        self.running = True
        self.interval = interval
        self.stop_at = stop_at
        now = time.monotonic()
        self.next_due = now + first_delay
        if first_delay > 0:
            self._timer = self.loop.call_later(first_delay, self._fire)
        else:
            self._fire()

    def _fire(self) -> None:
        self._timer = None
        if self.closed or not self.running or self.pending_id is not None:
            return
        now = time.monotonic()
        if now >= self.stop_at:
            self.running = False
            self._idle()
            return
        action, payload, tag = make_call(self.version, self.kind, self.n, self.seq)
        self.n += 1
        self.call(action, payload, tag)

    def _next(self, now: float) -> None:
        if not self.running:
            self._idle()
            return
        if now >= self.stop_at:
            self.running = False
            self._idle()
            return
        if self.interval <= 0:
            self._fire()
            return
        self.next_due += self.interval
        if self.next_due < now - self.interval:
            self.next_due = now  # fell behind: no burst to catch up
        delay = self.next_due - now
        if delay <= 0:
            self._fire()
        else:
            self._timer = self.loop.call_later(delay, self._fire)

    def _idle(self) -> None:
        if self.on_idle is not None and self.pending_id is None and not self.running:
            self.on_idle(self)


# ------------------------------------------------------------------ worker processes
@dataclass
class WorkerConfig:
    port: int
    version: str
    kind: str
    charger_ids: list[str]
    cpus: frozenset[int] | None
    use_uvloop: bool = True
    connect_concurrency: int = 100
    connect_timeout: float = 60.0
    boot: bool = False


@dataclass
class Phase:
    """One measured phase: warm-up from ``go`` until ``start``, measured until ``end``.

    ``interval`` 0 is closed loop; otherwise each connection sends one CALL per interval
    (random phase), still never more than one outstanding.
    """

    start: float
    end: float
    interval: float = 0.0
    kind: str | None = None


async def _recv(loop: asyncio.AbstractEventLoop, pipe: Connection) -> Any:
    future: asyncio.Future[Any] = loop.create_future()

    def readable() -> None:
        if not future.done():
            try:
                future.set_result(pipe.recv())
            except EOFError as exc:
                future.set_exception(exc)

    loop.add_reader(pipe.fileno(), readable)
    try:
        return await future
    finally:
        loop.remove_reader(pipe.fileno())
        # uvloop leaves the descriptor non-blocking; a large send() would then fail (EAGAIN).
        os.set_blocking(pipe.fileno(), True)


async def _worker_async(cfg: WorkerConfig, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    window = Window()
    stats = Stats()
    clients: list[OcppClient] = []
    failures: dict[str, int] = {}
    first_failure: list[str] = []
    gate = asyncio.Semaphore(cfg.connect_concurrency)
    connect_started = time.monotonic()

    async def open_one(index: int, cid: str) -> None:
        async with gate:
            client: OcppClient | None = None
            try:
                _, created = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: OcppClient(
                            cid, cfg.port, cfg.version, cfg.kind, stats, window, index * 10
                        ),
                        HOST,
                        cfg.port,
                    ),
                    cfg.connect_timeout,
                )
                client = created
                await asyncio.wait_for(client.handshake, cfg.connect_timeout)
                if cfg.boot:
                    reply = await client.call_once("boot", cfg.connect_timeout)
                    if reply[0] != 3:
                        raise HandshakeFailed(f"BootNotification answered {reply!r}")
                clients.append(client)
            except Exception as exc:
                key = type(exc).__name__
                failures[key] = failures.get(key, 0) + 1
                if not first_failure:
                    first_failure.append(f"{cid}: {exc!r}")
                if client is not None:
                    client.close()

    await asyncio.gather(*(open_one(i, cid) for i, cid in enumerate(cfg.charger_ids)))
    pipe.send(
        {
            "ready": len(clients),
            "failures": failures,
            "first_failure": first_failure[0] if first_failure else None,
            "connect_seconds": time.monotonic() - connect_started,
        }
    )
    while True:
        command = await _recv(loop, pipe)
        if command == "stop":
            break
        phase: Phase = command
        window.start, window.end = phase.start, phase.end
        stats.reset()
        idle = asyncio.Event()
        busy = {id(c) for c in clients if not c.closed}

        def on_idle(client: OcppClient, busy: set[int] = busy, idle: asyncio.Event = idle) -> None:
            busy.discard(id(client))
            if not busy:
                idle.set()

        for client in clients:
            client.kind = phase.kind or cfg.kind
            client.on_idle = on_idle
            if client.closed:
                continue
            first = random.uniform(0, phase.interval) if phase.interval > 0 else 0.0
            client.start(phase.interval, phase.end, first)
        if not busy:
            idle.set()
        # Connections stop sending at ``end``; give outstanding CALLs a bounded time.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), max(0.0, phase.end - time.monotonic()) + 10)
        outstanding = sum(1 for c in clients if c.pending_id is not None)
        for client in clients:
            client.running = False
            client.on_idle = None
        result = stats.export()
        result["outstanding_after_end"] = outstanding
        result["open"] = sum(1 for c in clients if not c.closed)
        pipe.send(result)
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)


def _worker_main(cfg: WorkerConfig, pipe: Connection) -> None:
    if cfg.cpus is not None:
        os.sched_setaffinity(0, cfg.cpus)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_async(_worker_async(cfg, pipe), cfg.use_uvloop)
    pipe.close()


@dataclass
class LoadResult:
    """Merged results of one phase over every worker."""

    latencies: dict[str, list[float]]
    completed: dict[str, int]
    errors: dict[str, int]
    first_error: str | None
    server_calls: int
    unexpected: int
    lost: int
    outstanding_after_end: int
    open_connections: int

    def answered(self, tags: Sequence[str] | None = None) -> int:
        return sum(len(v) for k, v in self.latencies.items() if tags is None or k in tags)

    def sorted_latencies(self, tags: Sequence[str] | None = None) -> list[float]:
        merged: list[float] = []
        for k, v in self.latencies.items():
            if tags is None or k in tags:
                merged.extend(v)
        merged.sort()
        return merged


class LoadGenerator:
    """Worker processes holding ``charger_ids`` connections to ``port``."""

    def __init__(
        self,
        *,
        port: int,
        version: str,
        kind: str,
        charger_ids: Sequence[str],
        procs: int,
        cpus: frozenset[int] | None,
        use_uvloop: bool = True,
        boot: bool = False,
        connect_concurrency: int = 100,
        connect_timeout: float = 60.0,
    ) -> None:
        procs = max(1, min(procs, len(charger_ids)))
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        self.ready: list[dict[str, Any]] = []
        for i in range(procs):
            ids = list(charger_ids[i::procs])
            cfg = WorkerConfig(
                port=port,
                version=version,
                kind=kind,
                charger_ids=ids,
                cpus=cpus,
                use_uvloop=use_uvloop,
                connect_concurrency=connect_concurrency,
                connect_timeout=connect_timeout,
                boot=boot,
            )
            parent, child = FORK.Pipe()
            proc = FORK.Process(target=_worker_main, args=(cfg, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("load workers did not finish connecting in time")
            self.ready.append(pipe.recv())
        failures: dict[str, int] = {}
        for r in self.ready:
            for k, v in r["failures"].items():
                failures[k] = failures.get(k, 0) + v
        return {
            "connected": sum(r["ready"] for r in self.ready),
            "failures": failures,
            "first_failure": next(
                (r["first_failure"] for r in self.ready if r["first_failure"]), None
            ),
            "connect_seconds": max(r["connect_seconds"] for r in self.ready),
        }

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(p)
        return total

    def rss(self) -> int:
        total = 0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                total += int(p.memory_info().rss)
        return total

    def start_phase(self, phase: Phase) -> None:
        for pipe in self.pipes:
            pipe.send(phase)

    def collect(self, timeout: float) -> LoadResult:
        deadline = time.monotonic() + timeout
        parts = []
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("load workers did not report in time")
            parts.append(pipe.recv())
        latencies: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        completed: dict[str, int] = {}
        for part in parts:
            for tag, count in part["completed"].items():
                completed[tag] = completed.get(tag, 0) + count
            for tag, raw in part["latencies"].items():
                values = array("d")
                values.frombytes(raw)
                latencies.setdefault(tag, []).extend(values)
            for code, count in part["errors"].items():
                errors[code] = errors.get(code, 0) + count
        return LoadResult(
            latencies=latencies,
            completed=completed,
            errors=errors,
            first_error=next((p["first_error"] for p in parts if p["first_error"]), None),
            server_calls=sum(p["server_calls"] for p in parts),
            unexpected=sum(p["unexpected"] for p in parts),
            lost=sum(p["lost"] for p in parts),
            outstanding_after_end=sum(p["outstanding_after_end"] for p in parts),
            open_connections=sum(p["open"] for p in parts),
        )

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def commit_stats(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Group commits in a window, from two /metrics scrapes."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("chargeops_db_commit_batch_size_count")
    return {
        "commits_per_s": batches / seconds,
        "write_sets_per_commit": delta("chargeops_db_commit_batch_size_sum") / batches
        if batches
        else math.nan,
        "commit_ms": delta("chargeops_db_commit_seconds_sum") / batches * 1000
        if batches
        else math.nan,
    }


def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# ------------------------------------------------------------------ reporting
def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for i, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def start_run(pin: bool, versions: Sequence[str], kinds: Sequence[str]) -> CpuPlan:
    """Every script's prologue: plan CPUs, pin this (driver) process, check the frames it
    will send against the schemas, print the machine line."""
    plan = cpu_plan(pin)
    if plan.client is not None:
        os.sched_setaffinity(0, plan.client)
    self_check(versions, kinds)
    print(machine_summary(plan))
    return plan


def machine_summary(plan: CpuPlan) -> str:
    return (
        f"machine: {os.cpu_count()} CPUs ({platform_cpu()}), Python {sys.version.split()[0]}, "
        f"{plan.describe()}\ncode: {code_version()}"
    )


def code_version() -> str:
    """The commit measured, and whether the work tree differs from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return "unknown"
    return f"commit {head or '?'}" + (
        f" + uncommitted changes in {len(changed)} file(s)" if changed else ""
    )


def platform_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))
        print(f"results written to {path}")
