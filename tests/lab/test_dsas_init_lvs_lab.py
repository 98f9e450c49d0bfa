"""dsas-init's lvs step (issue 16) at the shell level, in a lab namespace.

Real parts: the master's files come over real HTTP (tests/support/fake_master.py serving
what the boot tree renders for the director), ``keepalived --config-test`` is the
real keepalived (on a namespace that has the director's interfaces), and the
reload is a real SIGHUP to a running process. ``ip`` and ``modprobe`` are the
fakes of test_dsas_init_unit.py: the QEMU test (test_lvs_vm.py) proves the rest
on a real kernel.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import Lab, Netns
from provision.inventory import load
from provision.policy.boottree import BootTree
from provision.render import render_host
from tests.support.dsas_init_support import DSAS_INIT, Machine
from tests.support.paths import FIXTURES, SUPPORT

SMALL = FIXTURES / "small.yaml"

FAKE_KEEPALIVED = """#!/bin/sh
echo "keepalived $*" >> "$FAKE_LOG"
case " $* " in *" --config-test "*) exec /usr/sbin/keepalived "$@" ;; esac
exit 0
"""

HUP_CATCHER = """
import signal, sys, time
log = sys.argv[1]
signal.signal(signal.SIGHUP, lambda *a: open(log, "a").write("HUP\\n"))
open(log, "a").write("ready\\n")
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
"""

# $1: where the real /usr/bin goes, $2: busybox; then the command
NO_CURL = """set -e
real=$1 busybox=$2
shift 2
mount --bind /usr/bin "$real"
mount -t tmpfs tmpfs /usr/bin
for f in "$real"/*; do
    case ${f##*/} in curl|wget) ;; *) "$real/ln" -s "$f" "/usr/bin/${f##*/}" ;; esac
done
"$real/ln" -s "$busybox" /usr/bin/wget
exec "$@"
"""

SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/send_redirects", "net/ipv4/vs/conntrack",
           "net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/all/arp_announce",
           "net/ipv4/conf/lo/arp_ignore", "net/ipv4/conf/lo/arp_announce")


class Director:
    """A fake lb1 (small.yaml) in a namespace that holds the master's HTTP side."""

    def __init__(self, lab: Lab, tmp: Path, host: str = "lb1"):
        self.inv = load(SMALL)
        self.host = self.inv.hosts[host]
        self.tmp = tmp
        self.ns: Netns = lab.netns("lvsinit")
        lab.bridge(self.ns, "br0", "198.18.0.1/24")
        # the director's VRRP interface, so keepalived's config test finds it
        self.ns.run(["ip", "link", "add", "bond0.2", "type", "veth", "peer", "name", "kapeer"])
        self.www = tmp / "www"
        self.events = tmp / "events.jsonl"
        self.events.write_text("")
        self.publish()
        self.master = self.ns.popen(
            [sys.executable, str(SUPPORT / "fake_master.py"), str(self.www),
             str(self.events), "198.18.0.1", "80"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ns.wait_port(80, "tcp")
        self.m = Machine(tmp / "node", dict(zip(self.host.hwtype.nics, self.host.macs,
                                                strict=True)))
        (self.m.bin / "keepalived").write_text(FAKE_KEEPALIVED)
        (self.m.bin / "keepalived").chmod(0o755)
        for f in SYSCTLS:
            p = self.m.root / "proc" / "sys" / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("1\n" if "redirects" in f else "0\n")
        self.ka_conf = self.m.root / "etc" / "keepalived" / "keepalived.conf"
        self.wrap: list[str] = []  # what dsas-init runs under (without_curl)

    def publish(self, conf: bytes | None = None, checksum: bytes | None = None) -> bytes:
        """What the master serves: the boot tree's files, or a given body/checksum."""
        tree = BootTree(self.tmp, self.inv)
        d = self.www / "hosts" / self.host.name
        d.mkdir(parents=True, exist_ok=True)
        body = conf if conf is not None else tree.lookup(
            f"hosts/{self.host.name}/keepalived.conf").data
        assert body is not None
        if checksum is None:
            if conf is None:
                checksum = tree.lookup(f"hosts/{self.host.name}/keepalived.conf.sha256").data
            else:
                import hashlib

                checksum = f"{hashlib.sha256(body).hexdigest()}  keepalived.conf\n".encode()
        assert checksum is not None
        (d / "keepalived.conf").write_bytes(body)
        (d / "keepalived.conf.sha256").write_bytes(checksum)
        return body

    def without_curl(self) -> None:
        """Run dsas-init with no curl and busybox's wget (as in the tiny-lvs image): in a
        mount namespace of its own, /usr/bin is a tmpfs of links to the real one but curl,
        and wget is busybox. (A PATH without them would not do: dsas-init appends
        /usr/bin; and bash's command -v finds a file even when it is not executable.)"""
        busybox = shutil.which("busybox")
        assert busybox, "busybox is not installed (the tiny images' wget)"
        real = self.tmp / "usr-bin"
        real.mkdir()
        self.wrap = ["unshare", "-m", "sh", "-c", NO_CURL, "nocurl", str(real),
                     busybox.replace("/usr/bin/", f"{real}/")]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        (self.m.root / "etc" / "dsas.conf").write_text(
            render_host(self.inv, self.host, "dsas.conf"))
        env = self.m.env("http://198.18.0.1")
        return self.ns.run([*self.wrap, "env", *[f"{k}={v}" for k, v in env.items()], "bash",
                            str(DSAS_INIT), *args], check=False, timeout=60)

    def sysctl(self, f: str) -> str:
        return (self.m.root / "proc" / "sys" / f).read_text().strip()

    def failed_events(self) -> list[dict[str, str]]:
        got = [json.loads(line) for line in self.events.read_text().splitlines()]
        return [e for e in got if e.get("stage") == "failed"]


@pytest.fixture
def director(lab: Lab, tmp_path: Path) -> Director:
    return Director(lab, tmp_path)


@pytest.fixture
def running_keepalived(director: Director) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process standing for the running keepalived: its pid file, and a log of SIGHUPs."""
    log = director.tmp / "hup.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", HUP_CATCHER, str(log)], text=True)
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "ready" in log.read_text()
    (director.m.root / "run" / "keepalived.pid").write_text(f"{proc.pid}\n")
    yield proc, log
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_director_boot_loads_ipvs_forwards_installs_and_starts(director: Director) -> None:
    out = director.run()
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = director.m.commands()
    assert "modprobe ip_vs" in cmds and "modprobe ip_vs_wlc" in cmds
    assert director.sysctl("net/ipv4/ip_forward") == "1"
    assert director.sysctl("net/ipv4/conf/all/send_redirects") == "0"  # NAT
    assert director.sysctl("net/ipv4/vs/conntrack") == "1"
    served = (director.www / "hosts/lb1/keepalived.conf").read_bytes()
    assert director.ka_conf.read_bytes() == served
    assert any(c.startswith("keepalived --config-test -f ") for c in cmds)
    assert f"keepalived -f {director.ka_conf} -p {director.m.root}/run/keepalived.pid" in cmds
    assert "service keepalived: run by the lvs step" in out.stdout
    assert not list(director.ka_conf.parent.glob("*dsas-new*"))


def test_reload_replaces_atomically_and_sighups_never_restarts(
        director: Director, running_keepalived: tuple[subprocess.Popen[str], Path]) -> None:
    _, hups = running_keepalived
    director.ka_conf.parent.mkdir(parents=True)
    director.ka_conf.write_text("! the old file\n")
    out = director.run("--reload-lvs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert director.ka_conf.read_bytes() == (director.www / "hosts/lb1/keepalived.conf"
                                             ).read_bytes()
    deadline = time.monotonic() + 10
    while "HUP" not in hups.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hups.read_text().count("HUP") == 1
    assert "reloaded (SIGHUP to" in out.stdout
    assert not any(c.startswith("keepalived -f") for c in director.m.commands())  # no start
    # the same file again: nothing replaced, no signal
    out = director.run("--reload-lvs")
    assert out.returncode == 0 and "unchanged" in out.stdout
    assert hups.read_text().count("HUP") == 1


def test_an_invalid_file_is_refused_with_keepalived_reason_running_one_kept(
        director: Director, running_keepalived: tuple[subprocess.Popen[str], Path]) -> None:
    _, hups = running_keepalived
    good = director.run("--reload-lvs")
    assert good.returncode == 0, good.stdout + good.stderr
    before = director.ka_conf.read_bytes()
    director.publish(conf=before + b"\nvirtual_server_grup nonsense {\n}\n")
    out = director.run("--reload-lvs")
    assert out.returncode == 1
    assert "keepalived refused the new keepalived.conf" in out.stdout
    assert "Unknown keyword 'virtual_server_grup'" in out.stdout  # keepalived's own words
    assert director.ka_conf.read_bytes() == before
    assert hups.read_text().count("HUP") == 1  # only the good one
    (ev,) = director.failed_events()
    assert ev["detail"].startswith("LVS_CONF_URL: keepalived refused")
    assert not list(director.ka_conf.parent.glob("*dsas-new*"))


def test_a_checksum_mismatch_is_refused(
        director: Director, running_keepalived: tuple[subprocess.Popen[str], Path]) -> None:
    director.ka_conf.parent.mkdir(parents=True)
    director.ka_conf.write_text("! the old file\n")
    director.publish(checksum=b"0" * 64 + b"  keepalived.conf\n")
    out = director.run("--reload-lvs")
    assert out.returncode == 1 and "checksum mismatch" in out.stdout
    assert director.ka_conf.read_text() == "! the old file\n"
    assert "HUP" not in running_keepalived[1].read_text()


def test_real_servers_nat_gateway_and_dr_vip_on_lo(tmp_path: Path) -> None:
    from tests.support.dsas_init_support import conf as node_conf

    m = Machine(tmp_path, {"eth0": "52:54:00:18:00:01", "eth1": "52:54:00:18:00:02"})
    for f in SYSCTLS:
        p = m.root / "proc" / "sys" / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("0\n")
    out = m.run(node_conf(LVS_NAT_GATEWAY="198.18.0.250", LVS_DR_VIPS="(198.19.2.10)"))
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = m.commands()
    first = cmds.index("ip route replace default via 198.18.0.1 dev bond0")
    assert cmds.index("ip route replace default via 198.18.0.250 dev bond0") > first
    assert "ip addr add 198.19.2.10/32 dev lo" in cmds
    for f in SYSCTLS[3:]:
        assert (m.root / "proc" / "sys" / f).read_text().strip() in ("1", "2")
    assert (m.root / "proc/sys/net/ipv4/conf/all/arp_announce").read_text().strip() == "2"
    assert (m.root / "proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    bad = m.run(node_conf(LVS_DR_VIPS="(198.19.2.999)"))
    assert bad.returncode == 1 and "LVS_DR_VIPS: '198.19.2.999' is not an IPv4 address" in \
        bad.stdout


@pytest.mark.parametrize("client", ["curl", "busybox wget"])
def test_the_masters_ssh_key_is_installed_for_root(director: Director, client: str) -> None:
    """So `dsas lb status` (and push) can log in to a netbooted director; with busybox's
    wget where there is no curl (the tiny-lvs image)."""
    if client != "curl":
        director.without_curl()
    out = director.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ssh: no keys published by the master (HTTP 404)" in out.stdout
    keys = director.m.root / "root" / ".ssh" / "authorized_keys"
    assert not keys.exists()
    (director.www / "ssh").mkdir()
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsas" + "0" * 40 + " dsas\n"
    (director.www / "ssh" / "authorized_keys").write_text(line)
    out = director.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert keys.read_text() == line and (keys.stat().st_mode & 0o777) == 0o600
    assert "(1 keys)" in out.stdout
