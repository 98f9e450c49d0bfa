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
from ..balancer.status import DirectorView, probe, query
from ..inventory.model import TAKEOVER_PRIORITY, Inventory
from ..push.remote import RemoteError, RemoteNode
from ..sshtrust.hostkeys import trust_new_boot_key
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
# keepalived stopped (SIGTERM: it sends VRRP priority 0, so a backup takes over at once,
# and removes its VIPs and IPVS rules); waited for, 10 s at most
STOP_DIRECTOR = (
    f"{PATH}; p=$(cat /run/keepalived.pid 2>/dev/null); "
    "systemctl stop keepalived 2>/dev/null; [ -n \"$p\" ] && kill \"$p\" 2>/dev/null; i=0; "
    "while [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; "
    "i=$((i+1)); done; if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then "
    "echo \"keepalived ($p) still runs 10 s after SIGTERM\" >&2; exit 1; fi; "
    "echo keepalived stopped")
HANDOVER_TIMEOUT = 30.0

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

    def reload(self, roles: set[str], pairs: set[str]) -> None:
        pairs = lbreload.pairs_of_roles(self.inv, roles) | (pairs & set(self.inv.lvs_pairs))
        # a handover's take-over ends with the next reload of its pair (the rebalance's,
        # or the restore's), as does one left by an assign killed in its handover
        for pair in pairs:
            lbmembers.set_takeover(self.store, pair, None)
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

    # -- the directors of an LVS pair the host leaves or joins -------------

    def _views(self, names: list[tuple[str, str]]) -> list[DirectorView]:
        return [query(self.cfg, n, a, self.timeout) for n, a in names]

    def hand_over(self, address: str, pair: str) -> str:
        """The pair's next active (the new inventory's) takes every VIP of ``pair`` while
        the host still holds them; then keepalived stops on the host.

        Stopping the holder first (keepalived's priority-0 advert) leaves the VIPs
        nowhere for the next one's skew, (256 - priority) / 256 advert intervals: 0.6 s
        at priority 100, and the clients' requests in it fail. So the next active is
        reloaded first at TAKEOVER_PRIORITY with preempt (an ``lb_members`` row,
        ``takeover``): it takes the VIPs at its master-down timer and sends gratuitous
        ARP, and the host steps down on its first advert. Only then does keepalived
        stop here; the rebalance's reload gives the next active its own priority
        back. Any failure before the stop puts the next active's config back and
        leaves keepalived running here, holding the VIPs."""
        others = [(n, a) for n, a in lbreload.directors(self.inv, {pair}) if n != self.host]
        vips = pair_vips(self.inv, pair)
        ready = [v for v in self._views(others) if runs_services(v, self.inv, pair)]
        if not ready:
            raise StepFailed(f"no other director of LVS pair {pair} runs its virtual services "
                             f"({', '.join(n for n, _ in others) or 'none'} asked): moving "
                             f"{self.host} would take the VIPs {' '.join(sorted(vips))} down")
        nxt = self.inv.lvs_pairs[pair].active
        if nxt not in [v.host for v in ready]:
            raise StepFailed(f"{nxt}, the next active director of LVS pair {pair}, does not "
                             f"run its virtual services (ready: "
                             f"{', '.join(v.host for v in ready)})")
        nxt_at = dict(others)[nxt]
        t0 = time.monotonic()
        took = self._take_over(pair, nxt, nxt_at, address, vips)
        said = self._run(address, STOP_DIRECTOR, "stopping keepalived")
        (v,) = self._views([(nxt, nxt_at)])
        if v.error is not None or not vips <= v.addresses:
            raise StepFailed(f"{nxt} lost the VIPs {' '.join(sorted(vips))} when keepalived "
                             f"stopped on {self.host}: {v.error or 'not on its interfaces'}")
        return (f"{nxt} took the VIPs {' '.join(sorted(vips))} in {took:.1f} s (a reload at "
                f"priority {TAKEOVER_PRIORITY} with preempt; {self.host} held them until "
                f"then); {said} on {self.host}, {time.monotonic() - t0:.1f} s in all")

    def _take_over(self, pair: str, nxt: str, nxt_at: str, address: str,
                   vips: set[str]) -> float:
        """``nxt`` reloaded at the take-over priority until it holds every VIP and the
        host none; the seconds that took. On a failure its config is put back."""
        p = self.inv.lvs_pairs[pair]
        bound = max(HANDOVER_TIMEOUT, 4 * float(p.advert_int) + 10)
        t0 = time.monotonic()
        lbmembers.set_takeover(self.store, pair, nxt, nxt_at, f"{self.host} leaves the pair")
        try:
            r = lbreload.reload_one(self.cfg, nxt, nxt_at, lbreload.expected_sha(
                self.inv, nxt, lbmembers.load(self.store)), self.timeout)
            if not r.ok:
                raise StepFailed(f"{nxt} ({nxt_at}) refused the take-over reload: {r.detail}")
            while True:
                mine, theirs = self._views([(self.host, address), (nxt, nxt_at)])
                if theirs.error is None and vips <= theirs.addresses \
                        and mine.error is None and not vips & mine.addresses:
                    return time.monotonic() - t0
                if time.monotonic() - t0 >= bound:
                    raise StepFailed(
                        f"{nxt} did not take the VIPs {' '.join(sorted(vips))} from "
                        f"{self.host} in {bound:g} s at priority {TAKEOVER_PRIORITY} "
                        f"({nxt} {_holds(theirs, vips)}, {self.host} {_holds(mine, vips)});"
                        f" keepalived still runs on {self.host}")
                time.sleep(0.5)
        except StepFailed:
            lbmembers.set_takeover(self.store, pair, None)
            back = lbreload.reload_one(self.cfg, nxt, nxt_at, lbreload.expected_sha(
                self.inv, nxt, lbmembers.load(self.store)), self.timeout)
            if not back.ok:
                self.log.append(f"{nxt}: its config could not be put back after the failed "
                                f"take-over: {back.detail}")
            raise

    def director_up(self, address: str, pair: str) -> tuple[bool, str]:
        """The host, a new director of ``pair``, has the pair's virtual services in IPVS."""
        (v,) = self._views([(self.host, address)])
        if v.error is not None:
            return False, f"{self.host}: {v.error}"
        n = len(self.inv.services_of_pair(pair))
        if not runs_services(v, self.inv, pair):
            return False, f"{self.host}: IPVS has not the {n} virtual services of pair {pair}"
        holds = " (holding the VIPs)" if pair_vips(self.inv, pair) <= v.addresses else ""
        return True, f"{self.host}: keepalived runs the {n} virtual services{holds}"

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

    def trust_new_key(self, address: str, since: float) -> str:
        """A netboot host back from its reboot: the host key of its ready report since
        ``since`` trusted for ``address`` in place of the old boot's, when the report is
        its own (``trust_new_boot_key``, as `dsas rollout` does); "" for a disk host
        (its keys are on its disk and did not change)."""
        h = self.inv.hosts.get(self.host)
        if h is None or h.boot != "netboot":
            return ""
        return trust_new_boot_key(self.cfg, self.store, self.inv, self.host, address, since)

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


def pair_vips(inv: Inventory, pair: str) -> set[str]:
    """Every VIP a pair's VRRP instances carry: its virtual services' and gateway VIPs."""
    p = inv.lvs_pairs[pair]
    return ({str(vs.vip) for vs in inv.services_of_pair(pair)}
            | {str(a) for a in p.gateway_vips.values()})


def _holds(v: DirectorView, vips: set[str]) -> str:
    if v.error is not None:
        return v.error
    return "holds " + (" ".join(sorted(vips & v.addresses)) or "none of them")


def runs_services(v: DirectorView, inv: Inventory, pair: str) -> bool:
    """The director answered and its IPVS table has every virtual service of ``pair``."""
    if v.error is not None:
        return False
    have = {(s.protocol, s.vip, s.port) for s in v.ipvs}
    return all((vs.protocol, str(vs.vip), vs.port) in have
               for vs in inv.services_of_pair(pair))


def shq(s: str) -> str:
    return shlex.quote(s)
