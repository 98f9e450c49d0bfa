"""Per-boot report tokens: bind a node's reported SSH host key to one boot.

When the master renders a host's ``dsas.conf`` it adds a fresh boot id and
``token = HMAC-SHA256(secret, "dsas-boot-report" | host | boot id)``; the node
sends both back with the key in its ``ready`` report (``dsas-init``). The
master recomputes the HMAC with its secret (kept in the state directory,
never logged), so nothing is stored per boot and a token for one host is no
use for another. What it does and does not protect against: README, "Security".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SECRET_BYTES = 32
TOKEN_HEX = 32  # 128 bits of the HMAC
_BOOT_ID = re.compile(r"^[0-9a-f]{1,16}-[0-9a-f]{12}$")
_TOKEN = re.compile(rf"^[0-9a-f]{{{TOKEN_HEX}}}$")


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def new_boot_id(now: float) -> str:
    """A fresh boot id: the time (hex seconds) and 48 random bits."""
    return f"{int(now):x}-{secrets.token_hex(6)}"


def token(secret: bytes, host: str, boot_id: str) -> str:
    msg = b"\0".join([b"dsas-boot-report", host.encode(), boot_id.encode()])
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:TOKEN_HEX]


def issue(secret: bytes, host: str, now: float) -> tuple[str, str]:
    """(boot id, token) for one rendering of ``host``'s dsas.conf."""
    boot_id = new_boot_id(now)
    return boot_id, token(secret, host, boot_id)


def verify(secret: bytes, host: str, boot_id: str | None, tok: str | None) -> bool:
    if not boot_id or not tok or not _BOOT_ID.match(boot_id) or not _TOKEN.match(tok):
        return False
    return hmac.compare_digest(token(secret, host, boot_id), tok)


def conf_lines(boot_id: str, tok: str) -> str:
    """The lines appended to a served dsas.conf (bash-sourceable, read by dsas-init)."""
    return ("#---- Boot report (per boot; dsas-init sends it with the host key) ----\n"
            f"DSAS_BOOT_ID={boot_id}\nDSAS_BOOT_TOKEN={tok}\n")
