"""push: a role's or host's multicast push settings (uftpd started by dsas-init)."""

from __future__ import annotations

import re
from typing import Any

from ..model import Push
from ..reader import Reader, kind_of

_PUSH_ROOT = re.compile(r"^(/[A-Za-z0-9._-]+)+$")


def push(r: Reader, m: dict[str, Any], path: str, base: Push) -> Push:
    """``push: {multicast: BOOL, root: PATH, agent: BOOL}``: the host's keys over its
    role's. ``agent`` (only with ``multicast``): the node's uftpd runs dsas-push's
    orders itself (``push/agent.py``), so an update costs the master no SSH login."""
    p = r.mapping(m, "push", f"{path}.push", {"multicast", "root", "agent"}, optional=True)
    if not p:
        return base
    multicast = p.get("multicast", base.multicast)
    if not isinstance(multicast, bool):
        r.err(p, "multicast", f"{path}.push.multicast",
              f"must be true or false, not {kind_of(multicast)}")
        multicast = base.multicast
    root = r.string(p, "root", f"{path}.push", default=base.root) or base.root
    if not root.startswith("/") or not _PUSH_ROOT.match(root):
        r.err(p, "root", f"{path}.push.root", "an absolute path of letters, digits and ._-/ only")
        root = base.root
    agent = p.get("agent", base.agent)
    if not isinstance(agent, bool):
        r.err(p, "agent", f"{path}.push.agent", f"must be true or false, not {kind_of(agent)}")
        agent = base.agent
    elif agent and not multicast:
        r.err(p, "agent", f"{path}.push.agent",
              "needs multicast: true (the agent is the boot uftpd's hook)")
        agent = False
    return Push(multicast, root, agent)
