"""``chargeops`` with a bad setting or an unreachable database: one line per problem on
stderr naming the setting, exit 2 (bad setting) or 1 (database unreachable), no traceback
and no password. The real console script runs as a subprocess."""

from __future__ import annotations

import socket
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.conftest import PG_HOST, need_service
from tests.process import free_port, run_command, run_migrate


def chargeops(tmp_path: Path, command: str, database_url: str, **settings: str) -> tuple[int, str]:
    done = run_command(command, database_url, tmp_path, **settings)
    assert done.stdout == "" or command == "serve", done.stdout
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_bad_settings_exit_2_with_one_line_each(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.pem"
    code, output = chargeops(
        tmp_path,
        command,
        f"sqlite+aiosqlite:///{tmp_path}/chargeops.db",
        tls_cert=str(missing),
        tls_key=str(missing),
        log_level="LOUD",
    )
    assert code == 2, output
    assert "Traceback" not in output
    assert output.splitlines() == [
        f"CHARGEOPS_TLS_CERT: '{missing}' is not a file",
        f"CHARGEOPS_TLS_KEY: '{missing}' is not a file",
        "CHARGEOPS_LOG_LEVEL: unknown log level 'LOUD'; "
        "use one of CRITICAL, ERROR, WARNING, INFO, DEBUG",
    ]
    assert not (tmp_path / "chargeops.db").exists()  # refused before migrating


def test_a_bad_database_url_names_the_setting_not_the_password(tmp_path: Path) -> None:
    code, output = chargeops(tmp_path, "serve", "postgresql://chargeops:hunter2@db/chargeops")
    assert code == 2, output
    assert output.splitlines() == [
        "CHARGEOPS_DATABASE_URL: unsupported driver 'postgresql'; "
        "use one of sqlite+aiosqlite, postgresql+asyncpg"
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_a_database_that_does_not_exist_is_one_line_exit_1(tmp_path: Path, command: str) -> None:
    need_service("PostgreSQL", PG_HOST, 5432)
    name = f"chargeops_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+asyncpg://postgres:hunter2@{PG_HOST}:5432/{name}"
    code, output = chargeops(tmp_path, command, url)
    assert code == 1, output
    assert "Traceback" not in output
    assert "hunter2" not in output
    # serve logs its start first; the problem is the last line
    assert output.splitlines()[-1] == (
        f"cannot reach the database at postgresql+asyncpg://postgres:***@{PG_HOST}:5432/"
        f'{name}: database "{name}" does not exist'
    )


@pytest.mark.parametrize("command", ["serve", "csms"])
def test_an_unreachable_nats_is_one_line_exit_1(tmp_path: Path, command: str) -> None:
    port = free_port()  # nothing listens there
    database_url = f"sqlite+aiosqlite:///{tmp_path}/chargeops.db"
    run_migrate(database_url, tmp_path)  # csms does not migrate
    code, output = chargeops(
        tmp_path,
        command,
        database_url,
        bus_url=f"nats://ops:hunter2@127.0.0.1:{port}?connect_wait=1",
    )
    assert code == 1, output
    assert "Traceback" not in output
    assert "hunter2" not in output
    last = output.splitlines()[-1]
    assert last.startswith(f"cannot reach NATS at nats://ops:***@127.0.0.1:{port} within 1 s: "), (
        output
    )
    assert "Connect call failed" in last or "refused" in last, last


@pytest.mark.parametrize("which", ["http", "ocpp"])
def test_a_port_in_use_is_one_line_exit_1_after_a_clean_stop(tmp_path: Path, which: str) -> None:
    """The HTTP port in use made uvicorn end the process from inside its task (exit 3, a
    traceback, after "up" was logged, nothing closed); the OCPP port in use was a traceback.
    Now: one line naming the setting, exit 1 (the holder may be on its way out), and what
    was started is stopped first (the node's row is marked stopped: a restart claims its id
    at once); the HTTP port is bound before anything starts."""
    database = tmp_path / "chargeops.db"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        other = free_port()
        ports = {"http_port": port, "ocpp_port": other}
        if which == "ocpp":
            ports = {"http_port": other, "ocpp_port": port}
        code, output = chargeops(
            tmp_path,
            "serve",
            f"sqlite+aiosqlite:///{database}",
            http_host="127.0.0.1",
            ocpp_host="127.0.0.1",
            **{k: str(v) for k, v in ports.items()},
        )
    assert code == 1, output
    assert "Traceback" not in output
    variable = f"CHARGEOPS_{which.upper()}"
    assert output.splitlines()[-1] == (
        f"cannot listen for {which.upper()} on 127.0.0.1:{port} ({variable}_HOST, "
        f"{variable}_PORT): address already in use"
    ), output
    assert " up: " not in output
    with sqlite3.connect(database) as conn:
        nodes = conn.execute("SELECT stopped_at IS NOT NULL FROM csms_nodes").fetchall()
    # HTTP is bound before anything starts: no node claimed; OCPP: claimed, then stopped.
    assert nodes == ([] if which == "http" else [(1,)])
