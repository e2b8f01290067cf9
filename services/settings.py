"""Process settings, read from the environment (prefix ``CHARGEOPS_``) and ``.env``.

Every setting is listed in the README's settings table; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "admin", "secret", "password", ""}


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
