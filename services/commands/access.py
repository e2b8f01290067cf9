"""Who may send commands: admins and dispatchers; a technician when the injected
:data:`~services.commands.contracts.CommandAuthorizer` says so (ticketing decides: an open
order on that charger is assigned to them); nobody else."""

from __future__ import annotations

from services.api_auth import Principal
from services.commands.contracts import CommandAuthorizer

SENDER_ROLES = frozenset({"admin", "dispatcher"})


async def deny_all(principal: Principal, charger_id: str) -> bool:  # noqa: ARG001
    """The default authorizer until ticketing provides one: no technician may send."""
    return False


async def may_send(principal: Principal, charger_id: str, authorizer: CommandAuthorizer) -> bool:
    if principal.role in SENDER_ROLES:
        return True
    if principal.role == "technician":
        return await authorizer(principal, charger_id)
    return False
