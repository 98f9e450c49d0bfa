"""One log line per file served (TFTP and HTTP): host, file, bytes, seconds.

The lines go to the ``provision.served`` logger at INFO; `dsas serve` shows them
with -v only (a boot storm would drown everything else), see
``provision.cli.common.setup_logging``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .logsafe import safe

if TYPE_CHECKING:
    from ..inventory.model import Inventory

LOGGER = "provision.served"
log = logging.getLogger(LOGGER)


def served(proto: str, host: str | None, path: str, peer: str, nbytes: int,
           seconds: float, inventory: Inventory | None = None) -> None:
    """Log one served file; ``host`` (else the inventory's host at ``peer``) names it."""
    if log.isEnabledFor(logging.INFO):
        if host is None and inventory is not None:
            h = inventory.host_by_ip(peer)
            host = h.name if h is not None else None
        log.info("%s: served %s to %s (host=%s): %d bytes in %.3f s", proto, safe(path),
                 safe(peer), safe(host or "-"), nbytes, seconds)
