"""keepalived for the master pair (issue 18): its config, rendered from the inventory,
and the process, a child of `dsas serve` that holds the master VIP (VRRP)."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
from pathlib import Path

from .members import Me, PairError

log = logging.getLogger(__name__)

KEEPALIVED_CONF = "keepalived-master.conf"
PR_SET_PDEATHSIG = 1


def render_keepalived(me: Me, interface: str) -> str:
    """keepalived.conf holding the master VIP (VRRP), for this master of the pair."""
    prio = 150 if me.side == "primary" else 100
    advert = me.pair.advert_int
    lines = [
        "# dsas: the master VIP, rendered from the inventory (cluster.masters.pair)",
        "global_defs {",
        f"    router_id dsas-master-{me.name}",
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_refresh 60",
        # after a partition heals (both were MASTER), the clients' ARP follows the one
        # that stays (as the directors' config; tests/lab/test_vrrp_split_lab.py)
        "    vrrp_higher_prio_send_advert",
        "    vrrp_garp_lower_prio_repeat 5",
        # sub-second adverts exist only in VRRPv3 (keepalived refuses them in v2)
        *(["    vrrp_version 3"] if advert != int(advert) else []),
        "}",
        "",
        "vrrp_instance dsas_master {",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {me.pair.vrid}",
        f"    priority {prio}",
        f"    advert_int {advert:g}",
    ]
    if not me.pair.preempt:
        lines.append("    nopreempt")
    lines += [
        f"    unicast_src_ip {me.address}",
        "    unicast_peer {",
        f"        {me.peer_address}",
        "    }",
        "    virtual_ipaddress {",
        f"        {me.vip}/{me.network.prefixlen} dev {interface}",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def _die_with_parent() -> None:  # in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Keepalived:
    """keepalived (Debian's) as a child of `dsas serve`: it gets SIGTERM when serve dies
    (PR_SET_PDEATHSIG), however serve dies, and then gives the VIP up at once."""

    def __init__(self, state_dir: Path, conf: str, binary: str = "keepalived") -> None:
        self.dir = state_dir
        self.conf = conf
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = self.dir / KEEPALIVED_CONF
        path.write_text(self.conf)
        run = self.dir / "keepalived"
        run.mkdir(exist_ok=True)
        log_file = open(self.dir / "keepalived.log", "ab")  # noqa: SIM115 - the child's
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-n", "-l", "-D", "-G", "-P", "-f", str(path),
                 "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid"),
                 "-c", str(run / "checkers.pid")],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        except OSError as e:
            raise PairError(f"cannot start keepalived: {e}") from None
        finally:
            log_file.close()
        log.info("master pair: keepalived started (pid %d, %s)", self.proc.pid, path)

    def reload(self, conf: str) -> None:
        """A new config (another peer): written, then SIGHUP (reload, never restart: a
        restart would drop the VIP)."""
        self.conf = conf
        (self.dir / KEEPALIVED_CONF).write_text(conf)
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            log.info("master pair: keepalived reloaded (%s)", self.dir / KEEPALIVED_CONF)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

