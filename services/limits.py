"""Process limits: one OCPP connection is one file descriptor."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_file_limit(wanted: int = 262_144) -> int:
    """Raise the open-file limit towards ``wanted``; returns the soft limit in force.

    The soft limit goes up to the hard limit; a privileged process may raise the hard
    limit too. Failing that, the limit stays as it was and the reason is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    for new_hard in (max(hard, wanted), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, new_hard), new_hard))
            break
        except (ValueError, OSError) as exc:
            log.debug("cannot set open-file limit to %d/%d: %s", wanted, new_hard, exc)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log.info("open-file limit: %d", soft)
    return soft
