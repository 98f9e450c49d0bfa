"""dsas-init against a fake node root, the parts that need root: device nodes for
storage, and reports that really reach an HTTP server in a lab namespace (the key
handling units are in tests/unit/test_dsas_init_unit.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lab.netns import Netns
from lab.testing import Lab, require_tool
from tests.support.dsas_init_support import (
    DSAS_INIT,
    FAKE,
    Machine,
    conf,
)
from tests.support.paths import SUPPORT


def test_storage_and_services(machine: Machine) -> None:
    for dev in ("sdb1", "sdb2"):
        os.mknod(machine.root / "dev" / dev, 0o600 | 0o060000, os.makedev(7, 200))
    initd = machine.root / "etc" / "init.d"
    initd.mkdir()
    (initd / "apache2").write_text(FAKE.replace("$(basename \"$0\")", "apache2"))
    (initd / "apache2").chmod(0o755)
    text = conf(SWDEVICE="/dev/sdb1", DBDEVICE="/dev/sdb2", DBMOUNT="/var/lib/db",
                DBFSTYPE="ext4", SERVICE_UNITS="(apache2 tomcat-shop)")
    out = machine.run(text)
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = machine.commands()
    assert "swapon /dev/sdb1" in cmds
    assert "mount -t ext4 /dev/sdb2 /var/lib/db" in cmds
    assert "apache2 start" in cmds
    assert "dsas-init: service tomcat-shop: not in this image, not started" in out.stdout



def fake_master(lab: Lab, tmp_path: Path, name: str, net: int) -> tuple[Netns, Path]:
    """A namespace on its own bridge (198.18.NET.1) running the fake master on port 8080;
    (the namespace, the file its events go to, one JSON line each)."""
    ns = lab.netns(name)
    lab.bridge(ns, "br0", f"198.18.{net}.1/24")
    events = tmp_path / "events.jsonl"
    events.write_text("")
    www = tmp_path / "www"
    www.mkdir()
    ns.popen([sys.executable, str(SUPPORT / "fake_master.py"), str(www), str(events),
              f"198.18.{net}.1", "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ns.wait_port(8080, "tcp")
    return ns, events

def test_failure_is_reported_to_the_master_over_http(lab: Lab, machine: Machine,
                                                     tmp_path: Path) -> None:
    """The `failed` event really reaches an HTTP server (in a lab namespace)."""
    ns, events = fake_master(lab, tmp_path, "initrep", 40)
    (machine.root / "etc" / "dsas.conf").write_text(conf(BOND_MODE="fastest"))
    env = machine.env("http://198.18.40.1:8080")
    out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                 check=False)
    assert out.returncode == 1
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(got) == 1 and got[0]["host"] == "n1" and got[0]["stage"] == "failed"
    assert got[0]["detail"].startswith("BOND_MODE: 'fastest' is not a bonding mode")


def test_ready_report_sends_the_host_key_with_this_boots_token(lab: Lab, machine: Machine,
                                                               tmp_path: Path) -> None:
    """The ready report carries the SSH host key and, with it, the boot id and token the
    master put in dsas.conf (DSAS_BOOT_ID, DSAS_BOOT_TOKEN); without them, the key alone."""
    ns, events = fake_master(lab, tmp_path, "inittok", 41)
    (machine.root / "etc" / "ssh").mkdir()
    (machine.root / "etc/ssh/ssh_host_ed25519_key.pub").write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey root@n1\n")
    token = "0123456789abcdef0123456789abcdef"
    env = machine.env("http://198.18.41.1:8080")
    for extra in ({"DSAS_BOOT_ID": "65a1b2c3-0123456789ab", "DSAS_BOOT_TOKEN": token}, {}):
        (machine.root / "etc" / "dsas.conf").write_text(conf(**extra))
        out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                     check=False)
        assert out.returncode == 0, out.stdout + out.stderr
    got = [json.loads(line) for line in events.read_text().splitlines()]
    ready = [e for e in got if e["stage"] == "ready"]
    assert len(ready) == 2
    assert ready[0]["ssh_key"] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey"
    assert ready[0]["boot_id"] == "65a1b2c3-0123456789ab" and ready[0]["token"] == token
    assert "token" not in ready[1] and "boot_id" not in ready[1]  # a re-run reset the keys
    assert ready[1]["ssh_key"] == ready[0]["ssh_key"]


def test_ready_report_names_the_image_version_this_machine_runs(lab: Lab, machine: Machine,
                                                                tmp_path: Path) -> None:
    """`dsas rollout` waits for IMAGE@VERSION in the ready report (issue 23): dsas.conf's
    IMAGE_VERSION; a disk host's image tree marker (what a rollout pushed); the netboot
    manifest (what the initramfs verified and unpacked), in that order of trust."""
    ns, events = fake_master(lab, tmp_path, "initimg", 42)
    env = machine.env("http://198.18.42.1:8080")
    (machine.root / "etc" / "dsas.conf").write_text(conf(IMAGE_VERSION="'v1'"))

    def boot() -> None:
        out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                     check=False)
        assert out.returncode == 0, out.stdout + out.stderr

    boot()
    marker = machine.root / "var/lib/dsas/image/tiny/.dsas-image"
    marker.parent.mkdir(parents=True)
    marker.write_text("tiny v2\n")
    boot()
    (machine.root / "run" / "dsas").mkdir(parents=True, exist_ok=True)
    (machine.root / "run/dsas/manifest.json").write_text('{\n  "version": "v3"\n}\n')
    boot()
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["image"] for e in got if e["stage"] == "ready"] == ["tiny@v1", "tiny@v2",
                                                                  "tiny@v3"]


# systemctl on a fake machine: `cat` finds every unit, `--no-block start` queues it,
# `show -p ActiveState|SubState --value UNIT` reads the unit's two lines in
# $DSAS_ROOT/units/UNIT (what systemd would say once the queued job ran)
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
case "$1" in
    cat|--no-block) exit 0 ;;
    show) [ "$3" = ActiveState ] && n=1 || n=2; sed -n "${n}p" "$DSAS_ROOT/units/$5" ;;
esac
"""


def boot_for_outcome(ns, env: dict[str, str], events: Path,  # noqa: ANN001
                     before: int) -> list[dict[str, str]]:
    """Run dsas-init once; the ready and failed reports so far, one more than
    ``before``. The report may come from dsas-init's background child, which holds its
    stdout: run() returns once both ended."""
    out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                 check=False, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    seen = [e for e in seen if e["stage"] in ("ready", "failed")]
    assert len(seen) == before + 1, (seen, out.stdout)
    return seen


def test_a_role_unit_that_fails_at_boot_is_reported_failed(lab: Lab, machine: Machine,
                                                           tmp_path: Path) -> None:
    """At boot, under systemd, the role's units are queued (--no-block: they are ordered
    after dsas-init.service) and the report waits for them: one that fails, or restarts
    after a failure, or is not active in DSAS_UNIT_WAIT s, is `failed` with the unit named;
    all active is `ready` (issue 23: a broken image must not report ready; the old code
    reported ready as soon as the start was queued)."""
    ns, events = fake_master(lab, tmp_path, "initunit", 43)
    (machine.bin / "systemctl").write_text(SYSTEMCTL)
    (machine.bin / "systemctl").chmod(0o755)
    (machine.root / "run" / "systemd" / "system").mkdir(parents=True)
    units = machine.root / "units"
    units.mkdir()
    (machine.root / "etc" / "dsas.conf").write_text(conf(SERVICE_UNITS="(lighttpd)"))
    env = {**machine.env("http://198.18.43.1:8080"), "DSAS_UNIT_WAIT": "3"}
    seen: list[dict[str, str]] = []
    for state in ("activating\nauto-restart\n", "failed\nfailed\n", "inactive\ndead\n",
                  "active\nrunning\n"):
        (units / "lighttpd").write_text(state)
        seen = boot_for_outcome(ns, env, events, len(seen))
    assert "systemctl --no-block start lighttpd" in machine.commands()
    got = [(e["stage"], e["detail"]) for e in seen]
    assert got[0] == ("failed", "SERVICE_UNITS[0]: lighttpd: failed to start (state "
                                "activating/auto-restart; role web)"), got
    assert got[1] == ("failed", "SERVICE_UNITS[0]: lighttpd: failed to start (state "
                                "failed/failed; role web)"), got
    assert got[2] == ("failed", "SERVICE_UNITS[0]: lighttpd: not active after 3 s (state "
                                "inactive/dead; role web)"), got
    assert got[3][0] == "ready", got


def test_at_boot_the_ready_report_waits_for_sshd(lab: Lab, machine: Machine,
                                               tmp_path: Path) -> None:
    """Under systemd, ssh.service is ordered after dsas-init.service (its host key comes
    first), so sshd starts only once dsas-init's step ends. The ready report waits for
    it as for a role unit: `ready` only once ssh.service is active, `failed` naming it
    when it does not come up; a disabled ssh.service is not waited for. Before, ready
    went out before sshd listened, and whoever logged in on it (push, assign, rollout)
    found no sshd."""
    ns, events = fake_master(lab, tmp_path, "initsshd", 44)
    (machine.bin / "systemctl").write_text(SYSTEMCTL.replace(
        "    cat|--no-block) exit 0 ;;",
        "    cat|--no-block) exit 0 ;;\n"
        "    is-enabled) [ ! -e \"$DSAS_ROOT/units/$3.disabled\" ] ;;"))
    (machine.bin / "systemctl").chmod(0o755)
    (machine.root / "run" / "systemd" / "system").mkdir(parents=True)
    (machine.root / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (machine.root / "usr" / "sbin" / "sshd").write_text("#!/bin/sh\nexit 0\n")
    (machine.root / "usr" / "sbin" / "sshd").chmod(0o755)
    units = machine.root / "units"
    units.mkdir()
    (machine.root / "etc" / "dsas.conf").write_text(conf(SERVICE_UNITS="()"))
    env = {**machine.env("http://198.18.44.1:8080"), "DSAS_UNIT_WAIT": "3"}
    seen: list[dict[str, str]] = []
    for state, disabled in (("inactive\ndead\n", False), ("active\nrunning\n", False),
                            ("inactive\ndead\n", True)):
        (units / "ssh.service").write_text(state)
        flag = units / "ssh.service.disabled"
        if disabled:
            flag.write_text("")
        seen = boot_for_outcome(ns, env, events, len(seen))
    got = [(e["stage"], e["detail"]) for e in seen]
    assert got[0] == ("failed", "sshd: ssh.service: not active after 3 s (state "
                                "inactive/dead; role web)"), got
    assert got[1][0] == "ready" and got[2][0] == "ready", got
    assert "systemctl show -p ActiveState --value ssh.service" in machine.commands()


def test_a_reapply_with_no_new_conf_reports_failed_to_the_running_conf_s_master(
        lab: Lab, machine: Machine, tmp_path: Path) -> None:
    """`dsas-init reapply` with no /etc/dsas.conf.new dies at once; its `failed` report
    goes to the running dsas.conf's MASTER_URL under its SYSTEMNAME (no DSAS_MASTER and
    no dsas.master= here, as on a disk host). Before, it went nowhere, and `dsas
    rollout` or `dsas assign` waited out their ready timeout for it."""
    ns, events = fake_master(lab, tmp_path, "initrap", 41)
    (machine.root / "etc" / "dsas.conf").write_text(conf(MASTER_URL="http://198.18.41.1:8080"))
    env = machine.env()
    del env["DSAS_MASTER"]
    out = ns.run(["env", "-u", "DSAS_MASTER", *[f"{k}={v}" for k, v in env.items()], "bash",
                  str(DSAS_INIT), "reapply"], check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["host"], e["stage"]) for e in got] == [("n1", "failed")], got
    assert "no new dsas.conf delivered" in got[0]["detail"], got


def test_an_image_with_sshd_and_no_host_key_makes_one_and_reports_it(
        lab: Lab, machine: Machine, tmp_path: Path) -> None:
    """A netbooted image ships no host key; dsas-init makes the ed25519 one before sshd
    starts, so the ready report carries it (ssh.service's `ssh-keygen -A` ran after the
    report before, and the report had no key). A key already there is kept."""
    require_tool("ssh-keygen")
    ns, events = fake_master(lab, tmp_path, "initkey", 42)
    (machine.root / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (machine.root / "usr" / "sbin" / "sshd").write_text("#!/bin/sh\nexit 0\n")
    (machine.root / "usr" / "sbin" / "sshd").chmod(0o755)
    (machine.root / "etc" / "ssh").mkdir()
    (machine.root / "etc" / "dsas.conf").write_text(conf())
    env = machine.env("http://198.18.42.1:8080")
    for _ in range(2):  # the second run keeps the key of the first
        out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                     check=False)
        assert out.returncode == 0, out.stdout + out.stderr
    pub = (machine.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    assert pub[0] == "ssh-ed25519"
    assert (machine.root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    ready = [json.loads(line) for line in events.read_text().splitlines()]
    ready = [e for e in ready if e["stage"] == "ready"]
    assert [e.get("ssh_key") for e in ready] == [f"ssh-ed25519 {pub[1]}"] * 2, ready
