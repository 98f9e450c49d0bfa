"""`dsas rollout` of a disk-booted host, live, in QEMU (TCG) (issue 23): d1's disk is made
by dsas-clone from image tiny-lvs version A and booted from it (extlinux, the initramfs's
disk mode, busybox init, dsas-init, sshd with the host key it keeps on its disk); the
master runs `dsas serve`. `dsas rollout tiny-lvs@B --host d1` then moves it the disk way:

- the plan names d1's boot mode, disk;
- B's root tree goes over as a dsas-push release (staged, verified against the master's
  manifest, switched by atomic rename) under /var/lib/dsas/image/tiny-lvs;
- its --then writes d1's dsas.conf for B as /etc/dsas.conf.new and runs the real
  `dsas-init reapply`, whose ready report names tiny-lvs@B (the release's marker);
- the live tree's files are B's, byte for byte (sha256 of every file, read on d1,
  against B's rootfs unpacked on the master), B's one changed file included;
- d1 is the only host of tiny-lvs, so the inventory's version becomes B, at the end;
- d1 was not rebooted (the same boot's console; its host key unchanged);
- a second rollout to a version with no root tree fails d1 and leaves its live release
  and /etc/dsas.conf as they were.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.clone import clone
from lab.cluster import LabCluster
from lab.lvs import publish_key, raw, trust
from lab.netns import Lab
from lab.qemu import Guest, GuestSpec
from lab.rollout import DISK_EDIT, DISK_INVENTORY, disk_boot_root, ready_images, vm_rollout
from lab.testing import require_root, require_tool
from provision.inventory import load

LIVE = "/var/lib/dsas/image/tiny-lvs"
# sha256 of every regular file of a tree but the rollout's marker, sorted: one digest
SUMS = ("cd {} && find . -type f ! -name .dsas-image -exec sha256sum {{}} + "
        "| LC_ALL=C sort | sha256sum | cut -d' ' -f1")


@pytest.mark.timeout(2400)
def test_rollout_moves_a_disk_booted_host_by_a_verified_release_and_reapply(
        tmp_path: Path) -> None:
    require_root()
    for t in ("qemu-system-x86_64", "extlinux", "sfdisk", "curl", "ip", "tar"):
        require_tool(t)
    boot = tmp_path / "boot"
    a, b = disk_boot_root(boot)
    inv_path = tmp_path / "cluster.yaml"
    inv_path.write_text(DISK_INVENTORY)
    disk = tmp_path / "d1.img"
    res = clone("d1", "--target", str(disk), "--size", "320M", "-i", str(inv_path),
                "--boot-root", str(boot), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    # B's files, as the master has them: what d1's live tree must hold after the move
    tree_b = tmp_path / "tree-b"
    tree_b.mkdir()
    subprocess.run(["tar", "-xzf", str(boot / "images" / "tiny-lvs" / b / "rootfs.tar.gz"),
                    "-C", str(tree_b)], check=True, timeout=120)
    want = subprocess.run(["sh", "-c", SUMS.format(shlex.quote(str(tree_b)))], check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()
    with Lab() as lab:
        c = LabCluster(lab, load(inv_path), inv_path, tmp_path, boot, ["-v"])
        try:
            c.setup_network()
            state = publish_key(c)
            c.start_serve()
            host = c.inventory.hosts["d1"]
            taps = [lab.tap(c.master, "br0") for _ in host.macs]
            g = Guest(lab, c.master, GuestSpec("d1", list(host.macs), memory_mib=384,
                                               disk=disk), taps, tmp_path / "guests")
            c.guests["d1"] = g
            g.start()
            t0 = time.monotonic()
            nodes = c.wait_stages(["d1"], ("ready", "failed"), 900)
            assert nodes["d1"].stage == "ready", (nodes["d1"].reason, g.console()[-3000:])
            console = g.console()
            assert "dsas: booting d1 from disk" in console, console[-3000:]
            print(f"\nd1 booted from its disk and ready in {time.monotonic() - t0:.0f} s")
            trust(c, state, "d1")
            before = raw(c, state, "d1", "cat /etc/ssh/ssh_host_ed25519_key.pub; "
                         "grep -c . /etc/profile; grep ^IMAGE_VERSION= /etc/dsas.conf")
            assert DISK_EDIT[1].strip() not in raw(c, state, "d1", "cat /etc/profile")

            wall = time.time()
            rc, doc, err, took = vm_rollout(c, state, f"tiny-lvs@{b}", "--host", "d1",
                                            "--yes", ready_timeout=600)
            assert rc == 0, err
            assert doc["outcome"] == "done" and doc["moved"] == ["d1"], doc
            assert doc["version"] == b and doc["previous"] == a, doc
            assert [(m["host"], m["boot"]) for m in doc["hosts"]] == [("d1", "disk")], doc
            assert ready_images(c, wall)["d1"] == [f"tiny-lvs@{b}"]
            print(f"d1 moved to tiny-lvs@{b} (disk: release + reapply) in {took:.0f} s")

            # the release: a symlink to releases/<id>, B's files byte for byte, the marker
            link = raw(c, state, "d1", f"readlink {LIVE}").strip()
            assert link.startswith(f"{LIVE}.releases/") or link.startswith(
                "tiny-lvs.releases/"), link
            assert raw(c, state, "d1", f"cat {LIVE}/.dsas-image").split() == ["tiny-lvs", b]
            got = raw(c, state, "d1", SUMS.format(shlex.quote(LIVE + "/"))).strip()
            assert got == want, "d1's live tree is not B's files"
            assert DISK_EDIT[1].strip() in raw(c, state, "d1",
                                               f"cat {LIVE}/{DISK_EDIT[0]}")
            # the real reapply ran, with the dsas.conf the rollout delivered
            conf = raw(c, state, "d1", "grep ^IMAGE_VERSION= /etc/dsas.conf; "
                       "ls /etc/dsas.conf.prev; cat /run/dsas/reapply.log")
            assert f"IMAGE_VERSION={b}" in conf or f"IMAGE_VERSION='{b}'" in conf, conf
            assert "reapply: role tools" in conf, conf
            assert load(inv_path).images["tiny-lvs"].version == b
            # not rebooted: one boot on the console, the same host key
            assert g.console().count("dsas: booting d1 from disk") == 1
            after = raw(c, state, "d1", "cat /etc/ssh/ssh_host_ed25519_key.pub")
            assert after.splitlines()[0] == before.splitlines()[0]

            # a version with no root tree: d1 fails, its live release and dsas.conf kept
            bad = f"{a[:8]}n"
            (boot / "images" / "tiny-lvs" / bad).mkdir()
            for f in ("manifest.json", "vmlinuz", "initrd.img"):
                (boot / "images" / "tiny-lvs" / bad / f).hardlink_to(
                    boot / "images" / "tiny-lvs" / b / f)
            rc, doc, err, _ = vm_rollout(c, state, f"tiny-lvs@{bad}", "--host", "d1",
                                         "--yes", ready_timeout=120)
            assert rc != 0, (doc, err)
            assert "rootfs.tar.gz" in (err + str(doc)), (doc, err)
            assert raw(c, state, "d1", f"readlink {LIVE}").strip() == link
            assert raw(c, state, "d1", "grep ^IMAGE_VERSION= /etc/dsas.conf") == \
                conf.splitlines()[0] + "\n"
        except Exception:
            print(c.serve_log()[-3000:], file=sys.stderr)
            for n, gg in c.guests.items():
                print(f"---- {n}\n{gg.console()[-4000:]}", file=sys.stderr)
            raise
        finally:
            c.stop()
