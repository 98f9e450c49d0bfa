"""`dsas rollout` against fake-but-real nodes (issue 23): an SSH farm (lab.sshfarm: each
node a namespace with its own sshd and host key, trusted through `dsas trust`), the
master's real HTTP service (`dsas serve --only http`) serving the boot files and taking
the nodes' reports, and `dsas rollout` run in the master's namespace.

A node's "reboot" (``--reboot-command``) is a script on the node that does what a
netbooting node does with the master: it fetches its dsas.conf from the master and
reports ``ready`` with ``IMAGE@IMAGE_VERSION`` from it over HTTP, from its own address,
or ``failed`` for the image version built broken here. A disk host's re-apply
(``--reapply-command``) reports the version of the image tree the push made live.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import yaml

from lab.sshfarm import MOUNT, NET
from lab.testing import require_tool
from tests.support.paths import ROOT
from tests.support.push_lab import PushLab, make_lab

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


def setup(lab, tmp_path: Path) -> PushLab:  # noqa: ANN001
    require_tool("curl")
    pl = make_lab(lab, tmp_path, count=3)
    doc = yaml.safe_load(pl.inventory.read_text())
    doc["hosts"]["n03"]["boot"] = "disk"
    pl.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    boot = tmp_path / "boot"
    for v in ("1", "2", BROKEN):
        d = boot / "images" / "tiny" / v
        d.mkdir(parents=True)
        (tmp_path / f"root{v}").mkdir()
        (tmp_path / f"root{v}" / "etc").mkdir()
        (tmp_path / f"root{v}" / "etc" / "os-release").write_text(f"tiny {v}\n")
        with tarfile.open(d / "rootfs.tar.gz", "w:gz") as t:
            t.add(tmp_path / f"root{v}", arcname=".")
    (boot / "images" / "tiny" / "current").symlink_to("1")
    for n in pl.farm.nodes:
        (n.root / "name").write_text(n.name)
        (n.root / "fake-boot").write_text(BOOT)
    with open(tmp_path / "serve.log", "wb") as log:  # the serve keeps its own copy
        pl.farm.master.popen([str(ROOT / ".venv/bin/dsas"), "serve", "-i", str(pl.inventory),
                              "--only", "http", "--interface", "br0", "--boot-root",
                              str(boot), "--state-dir", str(pl.state)],
                             stdout=log, stderr=subprocess.STDOUT)
    pl.farm.master.wait_port(80, "tcp")
    return pl


def rollout(pl: PushLab, *args: str) -> tuple[int, dict, str]:
    r = pl.farm.master.run(
        [str(ROOT / ".venv/bin/dsas"), "rollout", *args, "--yes", "--json",
         "-i", str(pl.inventory), "--state-dir", str(pl.state),
         "--boot-root", str(pl.inventory.parent / "boot"), "--disk-root", DISK_ROOT,
         "--reboot-command", f"sh {MOUNT}/fake-boot netboot",
         "--reapply-command", f"sh {MOUNT}/fake-boot disk",
         "--ready-timeout", "20", "--timeout", "5"], timeout=180, check=False)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


def boots(pl: PushLab, name: str) -> list[str]:
    f = pl.node(name).root / "boots"
    return f.read_text().splitlines() if f.exists() else []


def test_a_role_moves_then_a_broken_version_stops_at_the_canary_and_back_restores_it(
        lab, tmp_path: Path) -> None:  # noqa: ANN001
    pl = setup(lab, tmp_path)
    # 1. the role moves to version 2: the canary, a wait, then the others two at a time
    rc, doc, err = rollout(pl, "tiny@2", "--role", "web", "--canary", "n01", "--batch", "2",
                           "--wait")
    assert rc == 0, err
    assert doc["outcome"] == "paused" and doc["moved"] == ["n01"], doc
    assert doc["pending"] == ["n02", "n03"] and boots(pl, "n02") == []
    assert doc["batches"] == [["n01"], ["n02", "n03"]]
    assert [h["boot"] for h in doc["hosts"]] == ["netboot", "netboot", "disk"]
    st = pl.dsas("status", "--master", MASTER)
    assert f"rollout {doc['run']} (" in st.stdout and "PAUSED" in st.stdout, st.stdout
    rc, doc, err = rollout(pl, "tiny", "--continue")
    assert rc == 0, err
    assert doc["outcome"] == "done" and doc["moved"] == ["n02", "n03"], doc
    assert boots(pl, "n01") == ["netboot 2"] and boots(pl, "n02") == ["netboot 2"]
    assert boots(pl, "n03") == ["disk 2"]
    # the disk host got the image's tree as a verified release, live by symlink
    n3 = pl.node("n03").root
    assert (n3 / "image/tiny/etc/os-release").read_text() == "tiny 2\n"
    assert (n3 / "image/tiny").is_symlink()
    # the whole image moved: the inventory says 2 now
    inv = yaml.safe_load(pl.inventory.read_text())
    assert inv["images"]["tiny"]["version"] == "2" and doc["inventory_revision"]

    # 2. a version that fails on the node: stopped after the canary, the others untouched
    rc, doc, err = rollout(pl, "tiny@" + BROKEN, "--role", "web", "--canary", "n02")
    assert rc == 1 and "stopped" in err
    assert doc["outcome"] == "stopped" and list(doc["failed"]) == ["n02"], doc
    assert "image broken" in doc["failed"]["n02"]
    assert doc["not_run"] == ["n01", "n03"] and doc["inventory_revision"] is None
    assert boots(pl, "n02") == ["netboot 2", f"netboot {BROKEN}"]
    assert boots(pl, "n01") == ["netboot 2"] and boots(pl, "n03") == ["disk 2"]
    assert yaml.safe_load(pl.inventory.read_text())["images"]["tiny"]["version"] == "2"

    # 3. --back returns the canary to the version it had; its pin goes
    rc, doc, err = rollout(pl, "tiny", "--back")
    assert rc == 0, err
    assert doc["back"] and doc["version"] == "2" and doc["moved"] == ["n02"], doc
    assert boots(pl, "n02")[-1] == "netboot 2"
    hist = pl.dsas("rollout", "--history", "--state-dir", str(pl.state))
    assert hist.stdout.count("\nrun ") + hist.stdout.startswith("run ") == 3, hist.stdout
    assert "tiny 1 -> 2: done" in hist.stdout
    assert "n02: 2 -> 3 failed" in hist.stdout
