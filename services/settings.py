"""Process settings, read from the environment (prefix ``CHARGEOPS_``) and ``.env``.

Every setting is listed in the README's settings table; keep the two in step.

Decision: what can be checked without the network is checked here (URLs parse and name a
supported driver or scheme, TLS files are readable, the log level exists), so that a bad
setting stops ``chargeops`` at once with one line naming it (services/cli.py) instead of
a traceback after the migrations ran. Messages never repeat a URL's password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "admin", "secret", "password", ""}
#: the async drivers the code runs on (a plain postgresql:// would load a sync driver)
DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
BUS_SCHEMES = ("memory://", "nats://")
#: the levels both logging and uvicorn know
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class ConfigError(Exception):
    """A setting that passed validation but does not work (e.g. a TLS key that does not
    match its certificate); ``chargeops`` prints the message and exits 2."""


class DatabaseUnreachable(Exception):
    """The configured database cannot be connected to (down, wrong host or credentials,
    no such database); ``chargeops`` prints the message and exits 1."""


class BusUnreachable(Exception):
    """The configured bus (NATS) cannot be connected to at start; ``chargeops`` prints the
    message and exits 1 (it may come up: a supervisor may retry)."""


class PortUnavailable(Exception):
    """A port to listen on cannot be had (in use, or not allowed); ``chargeops`` prints the
    message and exits 1 (its holder may be a process on its way out: a supervisor may
    retry)."""

    @classmethod
    def of(cls, what: str, host: str, port: int, error: OSError) -> PortUnavailable:
        """``what``: HTTP or OCPP, whose ``CHARGEOPS_<what>_HOST/PORT`` are named."""
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        return cls(
            f"cannot listen for {what} on {host}:{port} (CHARGEOPS_{what}_HOST, "
            f"CHARGEOPS_{what}_PORT): {reason}"
        )


def problems(error: ValidationError) -> list[str]:
    """One line per problem in ``error``, naming the environment variable; the values
    are left out (one may be a secret)."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        loc = item["loc"]
        lines.append(f"CHARGEOPS_{str(loc[0]).upper()}: {message}" if loc else message)
    return lines


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    from sqlalchemy.engine import make_url  # imported when needed: `chargeops` starts faster
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHARGEOPS_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./var/chargeops.db"
    bus_url: str = "memory://"
    node_id: str = Field(default="node-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    ocpp_host: str = "0.0.0.0"
    ocpp_port: int = Field(default=9000, ge=0, le=65535)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=0, le=65535)
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    heartbeat_interval: int = Field(default=300, ge=1, le=86400)
    offline_grace: float = Field(default=60.0, ge=0)
    ping_interval: float | None = Field(default=30.0, gt=0)
    ping_timeout: float | None = Field(default=30.0, gt=0)
    close_timeout: float = Field(default=10.0, gt=0)
    max_frame_bytes: int = Field(default=256 * 1024, ge=1024)
    frames_per_second: float = Field(default=200.0, gt=0)
    frame_burst: int = Field(default=400, ge=1)
    call_timeout: float = Field(default=30.0, gt=0)
    #: csms node liveness (csms/nodes.py): a node that has not beaten for 3 intervals is dead
    node_beat_interval: float = Field(default=5.0, gt=0, le=300)

    allow_unknown_chargers: bool = False
    authorize_accept_all: bool = False
    #: seconds a remote start's id token is accepted from its charger (csms/remote_starts.py)
    remote_start_window: float = Field(default=300.0, gt=0)
    auth_failures_per_minute: int = Field(default=10, ge=1)

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    admin_token: SecretStr | None = None
    message_log_retention_days: int = Field(default=30, ge=0)
    event_retention_days: int = Field(default=30, ge=0)
    commit_batch_size: int = Field(default=200, ge=1, le=5000)
    #: seconds the raw frame log, consumer cursors and last-seen times may wait to be
    #: written, gathered into one commit (services/committer.py); 0 = the next commit
    defer_interval: float = Field(default=0.1, ge=0, le=5)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: CPU milliseconds one work-order intake transaction may spend before it commits and the
    #: next goes on with the rest of the page (ticketing/work_orders/intake.py)
    intake_transaction_budget_ms: float = Field(default=5.0, ge=0, le=10_000)
    log_level: str = "INFO"

    # ticketing: derived faults and timers
    offline_order_after: float = Field(default=900.0, ge=0)
    reboot_loop_boots: int = Field(default=3, ge=2)
    reboot_loop_window: float = Field(default=3600.0, gt=0)
    flapping_changes: int = Field(default=6, ge=2)
    flapping_window: float = Field(default=3600.0, gt=0)
    site_down_fraction: float = Field(default=0.6, gt=0, le=1)
    site_down_min_chargers: int = Field(default=2, ge=2)
    ticketing_scan_interval: float = Field(default=5.0, gt=0)
    auto_reset_budget: int = Field(default=3, ge=0)
    auto_reset_window: float = Field(default=86400.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            # Not repeated: the value may hold a password.
            raise ValueError(
                "not a database URL; expected e.g. sqlite+aiosqlite:///./var/chargeops.db "
                "or postgresql+asyncpg://user@host:5432/db"
            ) from None
        if url.drivername not in DATABASE_DRIVERS:
            raise ValueError(
                f"unsupported driver {url.drivername!r}; use one of {', '.join(DATABASE_DRIVERS)}"
            )
        return value

    @field_validator("bus_url")
    @classmethod
    def _bus_url(cls, value: str) -> str:
        if not value.startswith(BUS_SCHEMES):
            raise ValueError("must start with memory:// or nats://")
        if value.startswith("nats://"):
            from services.bus.nats_url import parse_nats_url  # the bus imports settings' users

            try:
                servers = parse_nats_url(value).servers
            except ValueError as exc:
                raise ValueError(str(exc).replace(repr(value), "the URL")) from None
            for server in servers:
                try:
                    parts = urlsplit(server)
                    parts.port  # noqa: B018  (raises ValueError if it is not a number)
                except ValueError:
                    raise ValueError("a server's port is not a number 0..65535") from None
                if not parts.hostname:
                    raise ValueError("a server has no host name")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r}; use one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("tls_cert", "tls_key", "tls_ca")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError(f"{str(value)!r} is not a file")
        if not os.access(value, os.R_OK):
            raise ValueError(f"{str(value)!r} is not readable")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production":
            token = self.admin_token.get_secret_value() if self.admin_token else None
            if token is not None and token.lower() in PLACEHOLDER_SECRETS:
                raise ValueError("CHARGEOPS_ADMIN_TOKEN is a placeholder; set a real secret")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("CHARGEOPS_TLS_CERT and CHARGEOPS_TLS_KEY must be set together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("CHARGEOPS_TLS_CA needs CHARGEOPS_TLS_CERT and CHARGEOPS_TLS_KEY")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def node_beat_timeout(self) -> float:
        """Seconds without a beat after which a csms node counts as dead."""
        return 3 * self.node_beat_interval

    @property
    def distributed(self) -> bool:
        """True when processes share work over a network bus (NATS), i.e. several csms
        nodes may run against one database."""
        return self.bus_url.startswith("nats://")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
