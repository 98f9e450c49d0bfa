"""A boot file that cannot be fetched is tried again: the iPXE script dsas serves
(boot.ipxe.j2) retries its kernel and initrd, a few seconds apart, so that a master
failing over to its secondary (the VIP moves in about 4 s) or restarting while a
machine downloads does not leave that machine powered on with nothing booted.

One BIOS guest (SeaBIOS + iPXE) netboots from `dsas serve`; the image's kernel is
hidden from the boot tree when it powers on, so its first fetch gets 404. Once the
console shows the script's retry line, the kernel is put back, and the guest must
reach ready on a later try.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.clone import tiny_boot_root
from lab.cluster import LabCluster
from lab.testing import Lab, require_root, require_tool
from provision import layout
from provision.inventory import load
from tests.support.paths import ROOT

LAB_INVENTORY = ROOT / "etc" / "dsas" / "lab.yaml"
HOST = "w101"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LabCluster]:
    require_root()
    require_tool("qemu-system-x86_64")
    boot = tmp_path / "boot"
    tiny_boot_root(boot)
    inv = load(LAB_INVENTORY)
    with Lab() as lab:
        c = LabCluster(lab, inv, LAB_INVENTORY, tmp_path, boot, ["-v"])
        c.setup_network()
        c.start_serve()
        try:
            yield c
        finally:
            c.stop()


def test_a_kernel_fetch_that_fails_is_tried_again_and_the_guest_boots(
        cluster: LabCluster) -> None:
    c = cluster
    img = layout.host_image(c.inventory, c.inventory.hosts[HOST])
    assert img is not None
    kernel = (c.boot_root / layout.image_file(*img, layout.KERNEL)).resolve()
    assert kernel.is_file(), kernel
    hidden = kernel.with_name(kernel.name + ".hidden")
    kernel.rename(hidden)
    g = c.add_guest(HOST, list(c.inventory.hosts[HOST].macs))
    g.start()
    try:
        try:
            m = g.wait_for(rf"dsas: {HOST}: fetching the boot files failed \(try (\d) of 5\)",
                           180)
        finally:
            hidden.rename(kernel)
        print(f"{HOST}: the first kernel fetch failed (try {m.group(1)} of 5); kernel back")
        c.wait_stages([HOST], ("ready", "failed"), 300)
        assert c.nodes()[HOST].stage == "ready", c.nodes()[HOST]
        con = g.console()
        assert "could not fetch the boot files" not in con, con[-2000:]
        print(f"{HOST}: ready on a later try, {g.elapsed():.0f} s after power-on")
    except Exception:
        print(c.serve_log()[-3000:], file=sys.stderr)
        print(f"---- {HOST}\n{g.console()[-3000:]}", file=sys.stderr)
        raise
