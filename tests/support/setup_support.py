"""The lab inventory and a foreign variant of it (test_setup, test_setup_vm)."""

from __future__ import annotations

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
