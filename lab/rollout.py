"""The rollout lab (issue 23): fake-but-real nodes for `dsas rollout`, shared by
tests/lab/test_rollout_lab.py and `python -m bench rollout`.

An SSH farm (``lab.sshfarm``: each node a namespace with its own sshd and host key,
trusted in the state dir's known_hosts), the master's real HTTP service (`dsas serve
--only http`) serving the boot files and taking the nodes' reports, an image store
with versions of image ``tiny`` (each with a small root tree), and `dsas rollout` run
in the master's namespace.

A node's "reboot" (``--reboot-command``) is a script on the node that does what a
netbooting node does with the master: it fetches its dsas.conf from the master and
reports ``ready`` with ``IMAGE@IMAGE_VERSION`` over HTTP, from its own address, or
``failed`` for the version built broken (``BROKEN``). A disk host's re-apply
(``--reapply-command``) reports the version of the image tree the push made live.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provision.sshtrust.sshconf import (
    SshConfig,
    add_known_host,
    ensure_client_key,
    parse_key_lines,
)

from .netns import Lab
from .sshfarm import MOUNT, NET, SshFarm, SshNode, build_farm

ROOT = Path(__file__).resolve().parent.parent
DSAS = str(ROOT / ".venv" / "bin" / "dsas")
MASTER = f"http://{NET}.1"
BROKEN = "3"  # the version whose "dsas-init" reports failed
DISK_ROOT = f"{MOUNT}/image"

BOOT = f"""\
#!/bin/sh
# what a netbooting node tells the master: its dsas.conf's image version, or failed
set -u
name=$(cat {MOUNT}/name)
mode=${{1:-netboot}}
(
sleep 0.3
if [ "$mode" = disk ]; then
    read -r _ v < {DISK_ROOT}/tiny/.dsas-image
else
    v=$(curl -fsS -m 5 "{MASTER}/hosts/$name/dsas.conf" \\
        | sed -n "s/^IMAGE_VERSION='\\{{0,1\\}}\\([^']*\\)'\\{{0,1\\}}$/\\1/p")
fi
# a node that never reports (a test kills the rollout meanwhile): it says it held
[ -e {MOUNT}/hold ] && {{ : > {MOUNT}/held; exit 0; }}
# a node that reports once a test removes "wait" (at most 30 s)
i=0
while [ -e {MOUNT}/wait ] && [ $i -lt 150 ]; do : > {MOUNT}/held; sleep 0.2; i=$((i + 1)); done
echo "$mode $v" >> {MOUNT}/boots
if [ "$v" = {BROKEN} ]; then
    body='{{"host": "'$name'", "stage": "failed", "detail": "dsas-init: image broken"}}'
else
    body='{{"host": "'$name'", "stage": "ready", "detail": "role web: up", "image": "tiny@'$v'"}}'
fi
curl -fsS -m 5 -H 'Content-Type: application/json' --data-binary "$body" \\
    "{MASTER}/api/v1/events"
) </dev/null >>{MOUNT}/boot.log 2>&1 &
"""


@dataclass
class RolloutLab:
    """The farm, its inventory, state and boot root, and `dsas` run on its master."""

    farm: SshFarm
    inventory: Path
    state: Path
    boot: Path

    def node(self, name: str) -> SshNode:
        return next(n for n in self.farm.nodes if n.name == name)

    def dsas(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.farm.master.run([DSAS, *args], timeout=timeout, check=False)

    def argv(self, *args: str, ready_timeout: float = 20) -> list[str]:
        """`dsas rollout ARGS --yes --json` with the fake nodes' boot commands."""
        return [DSAS, "rollout", *args, "--yes", "--json", "-i", str(self.inventory),
                "--state-dir", str(self.state), "--boot-root", str(self.boot),
                "--disk-root", DISK_ROOT,
                "--reboot-command", f"sh {MOUNT}/fake-boot netboot",
                "--reapply-command", f"sh {MOUNT}/fake-boot disk",
                "--ready-timeout", f"{ready_timeout:g}", "--timeout", "5"]

    def rollout(self, *args: str, ready_timeout: float = 20) -> tuple[int, dict[str, Any], str]:
        r = self.farm.master.run(self.argv(*args, ready_timeout=ready_timeout), timeout=300,
                                 check=False)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr

    def boots(self, name: str) -> list[str]:
        """What the node "booted", in order ("netboot 2", "disk 2", ...)."""
        f = self.node(name).root / "boots"
        return f.read_text().splitlines() if f.exists() else []


def _images(boot: Path, work: Path, versions: tuple[str, ...]) -> None:
    for v in versions:
        d = boot / "images" / "tiny" / v
        d.mkdir(parents=True)
        tree = work / f"root{v}"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "os-release").write_text(f"tiny {v}\n")
        with tarfile.open(d / "rootfs.tar.gz", "w:gz") as t:
            t.add(tree, arcname=".")
    (boot / "images" / "tiny" / "current").symlink_to(versions[0])


def make(lab: Lab, work: Path, count: int = 3, disk: tuple[str, ...] = ("n03",),
         versions: tuple[str, ...] = ("1", "2", BROKEN)) -> RolloutLab:
    """``count`` nodes of role web (image tiny, version 1; ``disk`` boot from disk),
    trusted; the master's HTTP service running."""
    farm = build_farm(lab, work / "farm", count, 64)
    state = work / "state"
    key = ensure_client_key(SshConfig(state))
    farm.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    for n in farm.nodes:
        add_known_host(SshConfig(state), n.address, parse_key_lines(n.host_key_pub()))
    doc = yaml.safe_load(farm.inventory_yaml())
    for name in disk:
        doc["hosts"][name]["boot"] = "disk"
    inv = work / "cluster.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    boot = work / "boot"
    _images(boot, work, versions)
    for n in farm.nodes:
        (n.root / "name").write_text(n.name)
        (n.root / "fake-boot").write_text(BOOT)
    with open(work / "serve.log", "wb") as log:  # the serve keeps its own copy
        farm.master.popen([DSAS, "serve", "-i", str(inv), "--only", "http", "--interface",
                           "br0", "--boot-root", str(boot), "--state-dir", str(state)],
                          stdout=log, stderr=subprocess.STDOUT)
    farm.master.wait_port(80, "tcp")
    return RolloutLab(farm, inv, state, boot)
