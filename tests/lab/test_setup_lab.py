"""`dsas setup` and `dsas serve`'s start-up report on a master in a lab namespace (the
import, presence check and recipe units are in tests/unit/test_setup.py)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from lab.netns import Netns
from lab.testing import Lab, require_root
from tests.support.setup_support import (
    DSAS,
    FOREIGN_INVENTORY,
    LAB_INVENTORY,
    fake_payload,
    run_dsas,
)


def _master(lab: Lab, tmp: Path, inventory: str) -> tuple[Netns, Path]:
    ns = lab.netns("master")
    lab.bridge(ns, "br0", "198.18.0.1/22")
    inv = tmp / "cluster.yaml"
    inv.write_text(inventory)
    return ns, inv


def test_setup_prepares_the_master_once_then_does_nothing(lab: Lab, tmp_path: Path) -> None:
    require_root()
    kernel, initrd, _ = fake_payload(tmp_path)
    boot = tmp_path / "boot"
    inventory = FOREIGN_INVENTORY.replace("image: tiny", "image: rescue").replace(
        "  tiny:\n    version: current\n", "")
    ns, inv = _master(lab, tmp_path, inventory)
    setup = [str(DSAS), "setup", "-i", str(inv), "--boot-root", str(boot), "--no-build"]
    first = ns.run(setup, check=False)
    assert first.returncode == 1  # the rescue image has no recipe: named, with its fix
    assert f"dsas image import rescue --kernel FILE --initrd FILE --boot-root {boot}" in (
        first.stderr)
    assert (boot / "undionly.kpxe").is_file() and (boot / "ldlinux.c32").is_file()
    run_dsas("image", "import", "rescue", "--kernel", str(kernel), "--initrd", str(initrd),
          "--boot-root", str(boot))
    second = ns.run(setup, check=False)
    assert second.returncode == 0, second.stderr
    assert "setup: nothing to do" in second.stdout and "is on br0" in second.stdout
    assert "copied" not in second.stdout
    (boot / "ipxe.efi").unlink()
    third = ns.run(setup, check=False)
    assert "copied 1 loader file(s)" in third.stdout and "setup: done" in third.stdout
    # outside the namespace the master address is on no interface: said, with the fix
    elsewhere = lab.netns("other")
    out = elsewhere.run(setup, check=False)
    assert out.returncode == 1
    assert "master_address 198.18.0.1 is on no interface" in out.stderr
    assert "ip addr add 198.18.0.1/22 dev IF" in out.stderr


def test_serve_logs_one_line_per_missing_file_with_its_fix(lab: Lab, tmp_path: Path) -> None:
    require_root()
    boot = tmp_path / "boot"
    ns, inv = _master(lab, tmp_path, LAB_INVENTORY.read_text())
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        proc = ns.popen([str(DSAS), "serve", "-i", str(inv), "--only", "http,tftp",
                         "--state-dir", str(tmp_path / "state"), "--boot-root", str(boot)],
                        stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "service http started" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
    finally:
        lab.stop(proc)
    missing = [line for line in text.splitlines() if "missing " in line]
    assert len(missing) == 3, text
    assert re.search(rf"missing {boot}/undionly.kpxe \(boot loader\): run `dsas setup "
                     rf"--boot-root {boot}`", missing[0])
    assert f"missing {boot}/ipxe.efi" in missing[1]
    assert f"missing {boot}/images/tiny/current/ (image tiny@current of w101, w102, w103 " \
           f"and 1 more): run `dsas image build tiny --boot-root {boot}`" in missing[2]
