"""``chargeops serve`` (or ``csms`` / ``ticketing``) as a real subprocess: free ports,
readiness, signals, logs.

Used by the tests that are about the process itself (crash durability, graceful
shutdown, restart), where running the system in-process would prove nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
BIN = Path(sys.executable).parent


def chargeops_command(*args: str) -> list[str]:
    """The installed console script, as ``make run`` uses it."""
    script = BIN / "chargeops"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from services.entry import main; main()", *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, **settings: Any) -> dict[str, str]:
    """The environment of a child process: no CHARGEOPS_* leaks in from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEOPS_")}
    env.update(
        {
            "CHARGEOPS_ENVIRONMENT": "test",
            "CHARGEOPS_DATABASE_URL": database_url,
            "CHARGEOPS_ADMIN_TOKEN": ADMIN_TOKEN,
            "CHARGEOPS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"CHARGEOPS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class ServerProcess:
    """One ``chargeops <command>`` child (``serve``, ``csms`` or ``ticketing``); its stdout
    and stderr go to ``log_path``."""

    def __init__(
        self, database_url: str, workdir: Path, name: str, command: str = "serve", **settings: Any
    ) -> None:
        self.name = name
        self.command = command
        self.http_port = free_port()
        self.ocpp_port = free_port()
        self.log_path = workdir / f"{name}.log"
        env = server_env(
            database_url,
            http_host="127.0.0.1",
            http_port=self.http_port,
            ocpp_host="127.0.0.1",
            ocpp_port=self.ocpp_port,
            **settings,
        )
        self._log: IO[bytes] = self.log_path.open("wb")
        # cwd: a scratch directory, so that no .env file is picked up.
        self.proc = subprocess.Popen(
            chargeops_command(command),
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp/"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )

    def _alive_or_fail(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(
                f"chargeops {self.command} ({self.name}) exited with {code}; log:\n{self.log()}"
            )

    async def wait_ready(self, attempts: int = 600, delay: float = 0.05) -> None:
        """Poll /readyz until it answers 200 (a bound, not a timing assertion)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            for _ in range(attempts):
                self._alive_or_fail()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(delay)
        raise AssertionError(
            f"chargeops {self.command} ({self.name}) never became ready; log:\n{self.log()}"
        )

    async def connect_ocpp(
        self, charger_id: str, attempts: int = 1000, delay: float = 0.01
    ) -> ClientConnection:
        """Open an OCPP 1.6 socket, retrying while the server is not yet listening."""
        last: Exception | None = None
        for _ in range(attempts):
            self._alive_or_fail()
            try:
                return await connect(
                    self.ocpp_url + charger_id,
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    open_timeout=10,
                    close_timeout=2,
                )
            except OSError as exc:
                last = exc
                await asyncio.sleep(delay)
        raise AssertionError(f"OCPP port never accepted {charger_id}: {last!r}\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    async def wait_exit(self, timeout: float = 30) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"chargeops {self.command} ({self.name}) did not exit within {timeout}s; "
                f"log:\n{self.log()}"
            ) from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._log.close()


class ServerPool:
    """Every server a test started; all are killed at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[ServerProcess] = []

    def start(
        self, database_url: str, command: str = "serve", name: str | None = None, **settings: Any
    ) -> ServerProcess:
        name = name or f"{command}-{len(self.servers) + 1}"
        server = ServerProcess(database_url, self.workdir, name, command, **settings)
        self.servers.append(server)
        return server

    async def start_ready(
        self, database_url: str, command: str = "serve", name: str | None = None, **settings: Any
    ) -> ServerProcess:
        server = self.start(database_url, command, name, **settings)
        await server.wait_ready()
        return server

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()

    def logs(self) -> str:
        return "\n".join(
            f"===== {s.log_path.name} (pid {s.pid}, exit {s.proc.returncode}) =====\n{s.log()}"
            for s in self.servers
        )


def run_command(
    command: str, database_url: str, workdir: Path, **settings: Any
) -> subprocess.CompletedProcess[str]:
    """``chargeops COMMAND`` as a child process to its end, its output captured."""
    return subprocess.run(
        chargeops_command(command),
        env=server_env(database_url, **settings),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_migrate(database_url: str, workdir: Path, **settings: Any) -> None:
    """``chargeops migrate`` as a child process; raises with its output if it fails."""
    done = run_command("migrate", database_url, workdir, **settings)
    if done.returncode != 0:
        raise AssertionError(
            f"chargeops migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
