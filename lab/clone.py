"""What the clone tests and benchmarks share: the image store (cached builds), an
inventory with disk layouts, loop devices that are always detached, disk inspection."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provision.imaging.build import Builder, default_recipes_dir
from provision.imaging.store import ImageStore

# A boot tree kept between runs on this machine, so the web image is built once
# (cold: ~3 min) and then reused from the build cache (< 1 s).
TEST_BOOT_ROOT = Path(os.environ.get("DSAS_TEST_BOOT_ROOT", "/var/cache/dsas/test-boot"))
TEST_CACHE = Path(os.environ.get("DSAS_TEST_IMAGE_CACHE", "/var/cache/dsas/images"))
CLONE = [sys.executable, "-m", "provision.cli.clone"]

INVENTORY = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.0.1
  masters: {primary: m1}
  kernel_args: console=ttyS0 panic=5
networks:
  inside:
    cidr: 198.18.0.0/24
    dns: [198.18.0.1]
  outside:
    cidr: 198.19.2.0/24
    gateway: 198.19.2.1
    vlan: 2
hwtypes:
  vm:                     # GPT: boot, swap, root
    nics: [eth0, eth1]
    modules: [virtio_net]
    disk:
      device: /dev/vda
      label: gpt
      boot: {device: /dev/vda1, size: 128M}
      swap: {device: /dev/vda2, size: 64M}
      fs:   {device: /dev/vda3, size: rest, mount: /}
  vmdos:                  # MBR: boot, root; db on a second disk (not cloned)
    nics: [eth0, eth1]
    disk:
      device: /dev/vda
      label: msdos
      boot: {device: /dev/vda1, size: 32M}
      fs:   {device: /dev/vda2, size: rest, mount: /}
      db:   {device: /dev/vdb1, size: 100M, mount: /var/lib/db}
images:
  web: {version: current}
  tiny: {version: current}
services:
  web: {units: [lighttpd]}
  master: {}
roles:
  master: {services: [master], networks: [inside], hwtype: vm, boot: disk}
  web:
    services: [web]
    networks: [inside, outside]
    hwtype: vm
    image: web
    boot: disk
    bond: {mode: active-backup, miimon: 100, primary: eth0}
  tiny: {services: [], networks: [inside], hwtype: vmdos, image: tiny, boot: disk}
hosts:
  m1: {role: master, macs: ["52:54:00:12:00:01", "52:54:00:12:01:01"],
       addresses: {inside: 198.18.0.1}}
  w1:
    role: web
    macs: ["52:54:00:12:00:21", "52:54:00:12:01:21"]
    addresses: {inside: 198.18.0.21, outside: 198.19.2.21}
  w2:
    role: web
    macs: ["52:54:00:12:00:22", "52:54:00:12:01:22"]
    addresses: {inside: 198.18.0.22, outside: 198.19.2.22}
  t1: {role: tiny, macs: ["52:54:00:12:00:31", "52:54:00:12:01:31"],
       addresses: {inside: 198.18.0.31}}
"""


NETBOOT_CACHE = Path("/var/cache/dsas/debs")  # the netboot VM tests' package cache


def tiny_boot_root(boot: Path) -> None:
    """A boot root for the netboot VM tests: the boot loaders and the tiny image."""
    from provision.policy.boottree import populate_loaders

    populate_loaders(boot)
    Builder(default_recipes_dir(), ImageStore(boot / "images"), NETBOOT_CACHE).build("tiny")


def build_images(*names: str) -> ImageStore:
    store = ImageStore(TEST_BOOT_ROOT / "images")
    builder = Builder(default_recipes_dir(), store, TEST_CACHE)
    for n in names:
        builder.build(n)
    return store


def clone(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DSAS_BOOT_ROOT=str(TEST_BOOT_ROOT))
    return subprocess.run([*CLONE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def loop_device(backing: Path, start: int = 0, size: int = 0) -> Iterator[str]:
    """A loop device over backing (or one partition of it: start/size in bytes)."""
    argv = ["losetup", "--find", "--show"]
    if size:
        argv += ["--offset", str(start), "--sizelimit", str(size)]
    dev = subprocess.run(argv + [str(backing)], capture_output=True, text=True, check=True,
                         timeout=30).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=30)


@contextlib.contextmanager
def mounted(dev: str, at: Path, options: str = "ro") -> Iterator[Path]:
    at.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", options, dev, str(at)], check=True, timeout=60)
    try:
        yield at
    finally:
        subprocess.run(["umount", str(at)], timeout=60)


@contextlib.contextmanager
def partition(disk: Path | str, number: int) -> Iterator[str]:
    """A loop device over partition `number` of disk, as its partition table says
    (this lab has no udev: partition nodes of loop devices do not appear)."""
    table = partition_table(disk)
    part = next(p for p in table["partitions"] if re.search(rf"\D{number}$", p["node"]))
    with loop_device(Path(disk), part["start"] * 512, part["size"] * 512) as dev:
        yield dev


def partition_table(path: Path | str) -> dict[str, Any]:
    out = subprocess.run(["sfdisk", "-J", str(path)], capture_output=True, text=True,
                         timeout=30)
    return json.loads(out.stdout)["partitiontable"] if out.returncode == 0 else {}


def blkid(dev: str) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", dev], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def loops_on(path: Path) -> str:
    return subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
