"""Settings validation: a bad setting is refused with a message naming it, and no message
repeats a secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.settings import Settings, masked_url, problems


def refused(**values: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **values)  # type: ignore[call-arg]
    return problems(info.value)


def accepted(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "server.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///./var/x.db", "postgresql+asyncpg://u:pw@db:5432/chargeops"]
)
def test_supported_database_urls_are_accepted(url: str) -> None:
    assert accepted(database_url=url).database_url == url


def test_a_database_url_that_does_not_parse_is_refused() -> None:
    [line] = refused(database_url="nonsense")
    assert line.startswith("CHARGEOPS_DATABASE_URL: not a database URL")


@pytest.mark.parametrize(
    "url", ["postgresql://u:hunter2@db/x", "sqlite:///x.db", "mysql+aiomysql://u:hunter2@db/x"]
)
def test_a_database_url_with_an_unsupported_driver_is_refused_without_its_password(
    url: str,
) -> None:
    [line] = refused(database_url=url)
    assert line.startswith("CHARGEOPS_DATABASE_URL: unsupported driver")
    assert "sqlite+aiosqlite, postgresql+asyncpg" in line
    assert "hunter2" not in line


def test_masked_url_hides_the_password() -> None:
    masked = masked_url("postgresql+asyncpg://u:hunter2@db:5432/x")
    assert masked == "postgresql+asyncpg://u:***@db:5432/x"
    assert masked_url("not a url") == "<unparseable URL>"


@pytest.mark.parametrize(
    "url", ["memory://", "nats://h:4222", "nats://u:pw@a:4222,b:4222?replicas=3"]
)
def test_supported_bus_urls_are_accepted(url: str) -> None:
    assert accepted(bus_url=url).bus_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://h:9092", "must start with memory:// or nats://"),
        ("nats://", "no host in the URL"),
        ("nats://u:hunter2@", "a server has no host name"),
        ("nats://h:port", "a server's port is not a number"),
        ("nats://h:4222?colour=red", "unknown option 'colour'"),
    ],
)
def test_a_bad_bus_url_is_refused(url: str, message: str) -> None:
    [line] = refused(bus_url=url)
    assert line.startswith("CHARGEOPS_BUS_URL: ")
    assert message in line
    assert "hunter2" not in line


def test_log_level_is_a_logging_level_in_any_case() -> None:
    assert accepted(log_level="debug").log_level == "DEBUG"
    [line] = refused(log_level="LOUD")
    assert line == (
        "CHARGEOPS_LOG_LEVEL: unknown log level 'LOUD'; "
        "use one of CRITICAL, ERROR, WARNING, INFO, DEBUG"
    )


def test_ports_are_0_to_65535() -> None:
    assert accepted(ocpp_port=0, http_port=65535).ocpp_port == 0  # 0: any free port
    lines = refused(ocpp_port=-1, http_port=65536)
    assert lines == [
        "CHARGEOPS_OCPP_PORT: Input should be greater than or equal to 0",
        "CHARGEOPS_HTTP_PORT: Input should be less than or equal to 65535",
    ]


def test_tls_files_must_exist(tmp_path: Path) -> None:
    lines = refused(tls_cert=tmp_path / "missing.pem", tls_key=tmp_path / "missing.key")
    assert lines == [
        f"CHARGEOPS_TLS_CERT: '{tmp_path / 'missing.pem'}' is not a file",
        f"CHARGEOPS_TLS_KEY: '{tmp_path / 'missing.key'}' is not a file",
    ]
    [line] = refused(tls_cert=tmp_path, tls_key=tmp_path)[:1]
    assert line == f"CHARGEOPS_TLS_CERT: '{tmp_path}' is not a file"


def test_tls_files_must_be_readable(pem: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Mode 0 is readable to root (CI runs as root): the permission check is what is tested.
    real_access = os.access
    monkeypatch.setattr(
        "services.settings.os.access",
        lambda path, mode: False if Path(path) == pem else real_access(path, mode),
    )
    [line, _] = refused(tls_cert=pem, tls_key=pem)
    assert line == f"CHARGEOPS_TLS_CERT: '{pem}' is not readable"


def test_tls_pair_must_be_complete(pem: Path) -> None:
    assert refused(tls_key=pem) == ["CHARGEOPS_TLS_CERT and CHARGEOPS_TLS_KEY must be set together"]
    assert refused(tls_cert=pem) == [
        "CHARGEOPS_TLS_CERT and CHARGEOPS_TLS_KEY must be set together"
    ]
    assert refused(tls_ca=pem) == [
        "CHARGEOPS_TLS_CA needs CHARGEOPS_TLS_CERT and CHARGEOPS_TLS_KEY"
    ]
    assert accepted(tls_cert=pem, tls_key=pem, tls_ca=pem).tls_enabled


def test_problems_never_show_the_admin_token() -> None:
    lines = refused(environment="production", admin_token="changeme")
    assert lines == ["CHARGEOPS_ADMIN_TOKEN is a placeholder; set a real secret"]
