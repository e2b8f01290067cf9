"""Remediation playbooks: ordered remote steps named by the fault rules.

Shipped as ``playbooks.yaml`` in the package (validated at load); a step is a command
from :mod:`services.commands.contracts` with its parameters (``{connector}`` is replaced by
the order's connector) and how long to wait for the charger to recover afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.commands.contracts import CommandName, validate_params


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command: CommandName
    params: dict[str, Any] = Field(default_factory=dict)
    wait_s: float = Field(default=0, ge=0, le=86400)
    #: a reset may run while a transaction is running only when the step says so
    allow_during_transaction: bool = False

    def bind(self, connector: str | None) -> dict[str, Any]:
        """The step's parameters for an order on ``connector``."""
        key = connector or "0"
        return {
            name: value.replace("{connector}", key) if isinstance(value, str) else value
            for name, value in self.params.items()
        }


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    mode: Literal["remote_first", "lockout"]
    description: str = ""
    steps: tuple[Step, ...] = ()
    #: how many times one step is tried while its command is not delivered (outcome
    #: ``unavailable``: the bus or the charger's csms node unreachable) before the remote
    #: fix counts as failed (remote_first: dispatched with the attempts; lockout: failed)
    undelivered_tries: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _params_are_valid(self) -> Playbook:
        for step in self.steps:
            try:
                validate_params(step.command, step.bind("1"))
            except ValidationError as exc:
                raise ValueError(f"playbook {self.name}: step {step.command}: {exc}") from exc
        return self


@lru_cache(maxsize=1)
def playbooks() -> dict[str, Playbook]:
    raw = yaml.safe_load((resources.files("ticketing.remediation") / "playbooks.yaml").read_text())
    return {name: Playbook(name=name, **body) for name, body in raw.items()}


def playbook(name: str | None) -> Playbook | None:
    """The playbook called ``name``; None for no name, ``none`` or an unknown name."""
    if not name:
        return None
    found = playbooks().get(name)
    if found is None or (not found.steps and found.mode == "remote_first"):
        return None
    return found


def remote_fixable(order: Mapping[str, Any]) -> bool:
    """Whether a remote fix can run for a work order: its fault names a remote-first
    playbook with steps, and it is for a charger (a site-level order has none to command).

    Decision: ``remote_fix`` is the state in which the playbook runs (issue 4: the safe
    remote fix first, dispatch when it fails); an order moved there without one had
    nothing to run it, nobody assigned and was not in the dispatcher queue: stuck for good.
    Such a move is refused (409) and ``remote_fix`` is not among its legal transitions."""
    book = playbook(order.get("playbook"))
    return book is not None and book.mode == "remote_first" and order.get("charger_id") is not None
