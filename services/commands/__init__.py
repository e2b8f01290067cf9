"""Commands to chargers: contracts (:mod:`.contracts`), the command log (:mod:`.log`,
:mod:`.history`, :mod:`.progress`, :mod:`.tables`) and who may send them (:mod:`.access`).

Only the contracts are imported here: the log depends on the bus, which depends on them.
"""

from services.commands.contracts import (
    COMMAND_NAMES,
    PARAMS,
    CommandAuthorizer,
    CommandName,
    CommandReply,
    CommandRequest,
    validate_params,
)

__all__ = [
    "COMMAND_NAMES",
    "PARAMS",
    "CommandAuthorizer",
    "CommandName",
    "CommandReply",
    "CommandRequest",
    "validate_params",
]
