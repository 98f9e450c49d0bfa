"""`dsas master join` (issue 18) between real processes: m01 and m02 run the pair, m01
makes m03 a master over SSH (a real sshd in m03's namespace, its host key trusted in
dsas's known_hosts), m03's serve pulls the leases, the other state and the boot tree
itself, m02 is told it left and lets the VIP go; then m01 and m02 are both killed and
m03 takes over: the clients renew the same addresses, a new one gets one, and the image
version published on m01 is served from the VIP."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.testing import require_tool, wait_for
from provision.services.servepid import running_serve
from provision.state import StateStore
from tests.support.master_lab import (
    DSAS,
    VIP,
    Master,
    Pair,
    add_master,
    start_client,
    start_sshd,
    up,
)

M03 = "198.18.0.4"


def _event(state: Path) -> None:
    from provision.policy.httpfiles import Event
    from provision.state import events
    store = StateStore(state)
    try:
        events.record(store, Event("w1", "ready", None, "base@v1", "198.18.0.11"),
                      time.time(), False, 100)
    finally:
        store.close()


def _has_event(state: Path) -> bool:
    store = StateStore(state)
    try:
        return any(r["host"] == "w1" and r["stage"] == "ready"
                   for r in store.dump().get("http_events", []))
    finally:
        store.close()


def _stop_serve(m: Master) -> None:
    """m03's serve was started over SSH (setsid): stop it by the pid in its pid file."""
    info = running_serve(m.state)
    if info is None:
        return
    pid = int(str(info["pid"]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and running_serve(m.state) is not None:
        time.sleep(0.2)
    if running_serve(m.state) is not None:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("pair_lab", ["join"], indirect=True)
def test_a_host_made_master_with_join_takes_over_after_the_first_two_are_gone(
        pair_lab: Pair) -> None:
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    up(p)
    clients = [p.client() for _ in range(2)]
    before = {c.mac: start_client(c) for c in clients}
    _event(m1.state)
    kernel = os.urandom((2 << 20) + 3)
    img = m1.dir / "boot" / "images" / "base" / "v1"
    img.mkdir(parents=True)
    (img / "vmlinuz").write_bytes(kernel)
    # m03: a host with sshd; m01's dsas-push key may log in, m03's host key is trusted.
    m3 = add_master(p, "m03", M03)
    ssh = m1.state / "ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                    "dsas-push", "-f", str(ssh / "id_ed25519")], check=True, timeout=30,
                   capture_output=True)
    host_key = start_sshd(m3, M03, ssh / "id_ed25519.pub")
    (ssh / "known_hosts").write_text(f"{M03} ssh-ed25519 {host_key}\n")
    serve = [DSAS, "serve", "--only", "dhcp,http,dns", "--http-port", "8080", "--interface",
             m3.iface, "--inventory", str(m3.inventory), "--state-dir", str(m3.state),
             "--boot-root", str(m3.dir / "boot"), "--discovery", "--master", "m03", "-vv"]
    start = (f"cd / && setsid -f {shlex.join(serve)} >> {shlex.quote(str(m3.dir))}/serve.log "
             "2>&1 < /dev/null")
    try:
        res = subprocess.run(m1.ns.cmd(
            [DSAS, "master", "join", "m03", "--inventory", str(m1.inventory), "--state-dir",
             str(m1.state), "--master", "m01", "--remote-state-dir", str(m3.state),
             "--remote-inventory", str(m3.inventory), "--remote-dsas", DSAS, "--start", start,
             "--wait", "90"]), capture_output=True, text=True, timeout=200)
        assert res.returncode == 0, (res.stdout, res.stderr, p.logs())
        assert "m03 is the secondary master" in res.stdout, res.stdout
        assert "secondary: m03" in m1.inventory.read_text()
        key = m3.state / "master-pair.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_bytes() == (m1.state / "master-pair.key").read_bytes()
        assert key.read_text().strip() not in res.stdout + res.stderr + m3.log()
        # m02 was told it left the pair, and let the VIP go
        wait_for(lambda: "no longer a master of the pair" in m2.log(), 20,
                 "m02 to hear it left the pair")
        assert "did not hear that it left" not in m1.log(), m1.log()[-3000:]
        wait_for(lambda: not (m2.state / "keepalived" / "keepalived.pid").exists()
                 or "letting the VIP go" in m2.log(), 20, "m02's keepalived stopped")
        # m03 has the leases, the event and the boot tree, all from m01
        held = m3.leases()
        assert all(held.get(ip) == mac for mac, ip in before.items()), (held, before)
        wait_for(lambda: _has_event(m3.state), 20, "the node event on m03")
        assert (m3.dir / "boot" / "images" / "base" / "v1" / "vmlinuz").read_bytes() == kernel
        assert (m3.state / "ssh" / "known_hosts").read_text() == \
            (ssh / "known_hosts").read_text()

        # The first two are gone.
        m2.kill()
        m1.kill()
        wait_for(m3.holds_vip, 20, "m03 to take the VIP")
        wait_for(lambda: m3.status().get("role") == "active", 10, "m03 active")
        for c in clients:
            assert c.renew() == before[c.mac], (c.mac, c.lines(), m3.log()[-4000:])
        late = p.client()
        ip = start_client(late)
        assert ip not in before.values()
        got = subprocess.run(late.ns.cmd(
            ["curl", "-s", "--max-time", "10", f"http://{VIP}:8080/images/base/v1/vmlinuz"]),
            capture_output=True, timeout=30)
        assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(kernel).digest(), \
            f"the image from the VIP: {len(got.stdout)} bytes"
    finally:
        _stop_serve(m3)
