"""The farm as `dsas assign` changes it: over SSH (host keys verified), the state
store's overrides and the nodes' reports (``live.Farm``)."""

from __future__ import annotations

import base64
import hashlib
import shlex
import time
from dataclasses import dataclass, field

from ..balancer import members as lbmembers
from ..balancer import reload as lbreload
from ..balancer.members import Override
from ..balancer.status import probe
from ..inventory.model import Inventory
from ..push.remote import RemoteError, RemoteNode
from ..sshtrust.sshconf import SshConfig
from ..state import StateStore, events
from .live import StepFailed

CONF = "/etc/dsas.conf"
PATH = "export PATH=$PATH:/usr/sbin:/sbin"


def deliver_script(text: str) -> str:
    data = base64.b64encode(text.encode()).decode()
    sha = hashlib.sha256(text.encode()).hexdigest()
    return (f"{PATH}; set -e; t={CONF}.new.tmp; printf %s {data} | base64 -d > \"$t\"; "
            f"[ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" = {sha} ] || "
            "{ echo 'checksum mismatch after the copy' >&2; rm -f \"$t\"; exit 3; }; "
            f"sync \"$t\" 2>/dev/null || sync; mv -f \"$t\" {CONF}.new; echo delivered {sha[:12]}")


# detached (setsid: a session of its own), as the re-apply may change the address
# this session came in on; nohup too where there is one (busybox has none: the
# tiny-lvs image), and what runs in the background is checked first, or a missing
# command would only show as no ready report
DETACH = ("command -v setsid >/dev/null || { echo 'setsid: not found' >&2; exit 127; }; "
          "n=$(command -v nohup || true); $n setsid")
REAPPLY = (f"{PATH}; mkdir -p /run/dsas; command -v dsas-init >/dev/null || "
           "{ echo 'dsas-init: not found' >&2; exit 127; }; "
           f"{DETACH} dsas-init reapply </dev/null >/run/dsas/reapply.log 2>&1 & echo started")
REBOOT = (f"{PATH}; {DETACH} sh -c 'sleep 1; systemctl reboot || reboot' "
          "</dev/null >/dev/null 2>&1 & echo rebooting")


@dataclass
class LiveFarm:
    """The real farm for one move: SSH to the host and the directors, the state store."""

    host: str
    inv: Inventory            # the new inventory (what the serve serves now)
    cfg: SshConfig
    store: StateStore
    timeout: float = 60
    log: list[str] = field(default_factory=list)
    # the host, while the new inventory makes it a director it is not yet: the
    # reloads before it has re-applied leave it out (it has no keepalived.conf URL
    # yet, and `dsas-init --reload-lvs` refuses); its ready report in the new role
    # makes it one
    becoming: set[str] = field(default_factory=set)

    # -- the pools ---------------------------------------------------------

    def set_members(self, rows: list[Override]) -> None:
        lbmembers.set_host(self.store, self.host, rows)

    def reload(self, roles: set[str]) -> None:
        pairs = lbreload.pairs_of_roles(self.inv, roles)
        done = lbreload.reload_all(self.inv, self.cfg, lbmembers.load(self.store), pairs,
                                   timeout=self.timeout, skip=frozenset(self.becoming))
        bad = [r for r in done if not r.ok]
        self.log += [f"{r.director}: {r.detail}" for r in done]
        if bad:
            raise StepFailed("reload refused on " + "; ".join(
                f"{r.director} ({r.address}): {r.detail}" for r in bad)
                + ("; the others run the new pools" if len(bad) < len(done) else ""))

    def _reads(self, roles: set[str], address: str) -> list[lbreload.PoolRead]:
        return lbreload.read_pools(self.inv, self.cfg, roles, address, self.timeout)

    def drained(self, roles: set[str], address: str) -> tuple[bool, str]:
        reads = self._reads(roles, address)
        return lbreload.drained(reads), f"{address}: {lbreload.describe(reads)}"

    def serving(self, roles: set[str], address: str) -> tuple[bool, str]:
        reads = self._reads(roles, address)
        return lbreload.serving(reads), f"{address}: {lbreload.describe(reads)}"

    # -- the host ----------------------------------------------------------

    def _run(self, address: str, script: str, what: str) -> str:
        return run_on(self.cfg, self.host, address, script, what, self.timeout)

    def deliver(self, address: str, text: str) -> str:
        said = self._run(address, deliver_script(text), "writing /etc/dsas.conf.new")
        return f"{CONF}.new written on {self.host} ({address}, host key verified): {said}"

    def _now(self) -> float:
        return time.time()

    def reapply(self, address: str) -> float:
        since = self._now()
        self._run(address, REAPPLY, "dsas-init reapply")
        return since

    def reboot(self, address: str) -> float:
        since = self._now()
        self._run(address, REBOOT, "reboot")
        return since

    def wait_report(self, since: float, role: str | None, timeout: float) -> str:
        """The host's first ``ready`` (with ``role``) or ``failed`` report after ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            for r in events.outcomes_since(self.store, self.host, since - 1):
                reason = r.reason or ""
                if r.stage == "failed":
                    raise StepFailed(f"{self.host} reports failed: {reason}")
                if role is None or reason.startswith(f"role {role}:"):
                    self.becoming.discard(self.host)  # it runs its new role now
                    return f"{self.host} reports ready ({reason}) after " \
                           f"{r.ts - since:.1f} s"
            if time.monotonic() >= deadline:
                raise StepFailed(f"no ready report from {self.host} in {timeout:g} s "
                                 "(see /run/dsas/reapply.log on it)")
            time.sleep(0.5)


def run_on(cfg: SshConfig, host: str, address: str, script: str, what: str,
           timeout: float) -> str:
    """``script`` on ``host`` over SSH (host key verified): its last line of output, or
    StepFailed naming the host, the address and why (also used by `dsas rollout`)."""
    why = probe(address, cfg.port, cfg.connect_timeout)
    if why is not None:
        raise StepFailed(f"{host} ({address}) unreachable: {why}")
    node = RemoteNode(cfg, host, address)
    try:
        rc, out, err = node.run(script, timeout=timeout)
    except RemoteError as e:
        raise StepFailed(f"{host} ({address}): {e.reason}") from None
    finally:
        node.close()
    if rc != 0:
        said = (err.strip() or out.strip() or f"exit {rc}").splitlines()[-1]
        raise StepFailed(f"{what} on {host} ({address}) failed: {said}")
    return out.strip().splitlines()[-1] if out.strip() else "ok"


def shq(s: str) -> str:
    return shlex.quote(s)
