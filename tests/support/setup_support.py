"""The lab inventory and a foreign variant of it, a fake kernel/initrd/root fs payload,
and dsas run as a process (test_setup, test_setup_lab, test_setup_vm)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from tests.support.paths import ROOT

LAB_INVENTORY = ROOT / "etc" / "dsas" / "lab.yaml"


FOREIGN_INVENTORY = LAB_INVENTORY.read_text().replace(
    "images:\n  tiny:\n    version: current\n",
    "images:\n  tiny:\n    version: current\n  rescue: {kernel_args: rescue.mode=1}\n",
).replace(
    "hosts:\n",
    "  rescue:\n    services: []\n    networks: [inside]\n    image: rescue\n    hwtype: vm\n"
    "    bond: {mode: none}\n    kernel_args: dsas.shell=ttyS1 role.arg=1\n"
    "hosts:\n  r1:\n    role: rescue\n    macs: [\"52:54:00:18:00:31\", \"52:54:00:18:01:31\"]\n"
    "    addresses: {inside: 198.18.1.31}\n    kernel_args: host.arg=2\n"
    "  r2:\n    role: rescue\n    loader: pxelinux\n"
    "    macs: [\"52:54:00:18:00:32\", \"52:54:00:18:01:32\"]\n"
    "    addresses: {inside: 198.18.1.32}\n",
)


DSAS = ROOT / ".venv" / "bin" / "dsas"


def fake_payload(tmp: Path) -> tuple[Path, Path, Path]:
    kernel, initrd, rootfs = tmp / "bzImage", tmp / "initrd", tmp / "root.tar"
    kernel.write_bytes(b"MZ kernel " * 500)
    initrd.write_bytes(b"070701 initrd " * 300)
    with tarfile.open(rootfs, "w") as tar:
        data = b"rescue\n"
        info = tarfile.TarInfo("etc/motd")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("etc/issue")
        link.type, link.linkname = tarfile.SYMTYPE, "motd"
        tar.addfile(link)
    return kernel, initrd, rootfs


def run_dsas(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(DSAS), *args], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"dsas {' '.join(args)}: {out.returncode}\n{out.stdout}{out.stderr}")
    return out
