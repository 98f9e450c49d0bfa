"""From an empty boot root to booted guests, as an operator does it (QEMU, TCG):

    `dsas setup` (loaders from Debian's packages, the images the inventory names
    built), then `dsas serve` on that boot root, and a BIOS guest (w101) PXE-boots
    to `ready` with no other preparation;
    meanwhile a foreign payload -- the netboot image's kernel and a tiny initrd of
    our own that prints its command line -- goes in with `dsas image import`, a host
    of a new role boots it (SIGHUP reload), and its kernel command line carries the
    payload's, role's and host's arguments and none of dsas's `dsas.*`.

One lab, two guests at once: VM tests are slow under TCG.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cluster import LabCluster
from lab.testing import Lab, require_root, require_tool
from provision.imaging.tree import Tree, gzip_bytes
from provision.inventory import load
from tests.support.paths import ROOT
from tests.support.setup_support import FOREIGN_INVENTORY

DSAS = ROOT / ".venv" / "bin" / "dsas"
LAB_INVENTORY = ROOT / "etc" / "dsas" / "lab.yaml"
CACHE = Path("/var/cache/dsas/debs")  # the lab tests' package cache
MARKER = "FOREIGN-PAYLOAD-BOOTED"
INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "{MARKER} cmdline=[$(/bin/busybox cat /proc/cmdline)]"
/bin/busybox poweroff -f
"""


def foreign_initrd(path: Path) -> Path:
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        pytest.fail("missing /bin/busybox (Debian package busybox-static)")
    t = Tree()
    for d in ("/bin", "/dev", "/proc"):
        t.mkdir(d)
    t.chardev("/dev/console", 5, 1)
    t.file("/bin/busybox", busybox.read_bytes(), 0o755)
    t.file("/init", INIT.encode(), 0o755)
    path.write_bytes(gzip_bytes(t.to_cpio()))
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LabCluster]:
    require_root()
    require_tool("qemu-system-x86_64")
    require_tool("curl")
    inv_path = tmp_path / "cluster.yaml"
    inv_path.write_text(LAB_INVENTORY.read_text())
    boot = tmp_path / "boot"  # empty: dsas setup fills it
    with Lab() as lab:
        c = LabCluster(lab, load(inv_path), inv_path, tmp_path, boot, ["-v"])
        try:
            yield c
        finally:
            c.stop()


def test_setup_then_serve_boots_a_guest_and_a_foreign_payload(
        cluster: LabCluster, tmp_path: Path) -> None:
    c = cluster
    c.setup_network()
    setup = [str(DSAS), "setup", "-i", str(c.inventory_path), "--boot-root", str(c.boot_root),
             "--cache", str(CACHE)]
    first = c.master.run(setup, check=False, timeout=1800)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "setup: done" in first.stdout and "is on br0" in first.stdout
    again = c.master.run(setup, check=False, timeout=300)
    assert again.returncode == 0 and "setup: nothing to do" in again.stdout, again.stdout

    c.start_serve()
    assert " missing " not in c.serve_log(), c.serve_log()
    w101 = c.add_guest("w101", list(c.inventory.hosts["w101"].macs))
    w101.start()

    kernel = c.boot_root / "images/netboot/current/vmlinuz"
    imp = subprocess.run(
        [str(DSAS), "image", "import", "rescue", "--kernel", str(kernel),
         "--initrd", str(foreign_initrd(tmp_path / "foreign.img")),
         "--kernel-args", "vendor.marker=1", "--boot-root", str(c.boot_root)],
        capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    c.inventory_path.write_text(FOREIGN_INVENTORY)
    assert c.serve_proc is not None
    c.serve_proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "reloaded inventory" not in c.serve_log():
        assert time.monotonic() < deadline, c.serve_log()[-2000:]
        time.sleep(0.2)
    r1 = c.add_guest("r1", ["52:54:00:18:00:31", "52:54:00:18:01:31"])
    r1.start()
    try:
        m = r1.wait_for(rf"{MARKER} cmdline=\[([^\]]*)\]", 300)
        c.wait_stages(["w101"], ("ready", "failed"), 300)
    except Exception:
        print(c.serve_log()[-4000:], file=sys.stderr)
        for g in c.guests.values():
            print(f"---- {g.spec.name}\n{g.console()[-2000:]}", file=sys.stderr)
        raise
    assert c.nodes()["w101"].stage == "ready"
    args = m.group(1).split()
    assert "vendor.marker=1" in args and "role.arg=1" in args and "host.arg=2" in args
    assert "console=ttyS0" in args
    assert not [a for a in args if a.startswith("dsas.")], args
