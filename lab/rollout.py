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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from provision.imaging.store import ImageStore

from provision.sshtrust.sshconf import (
    SshConfig,
    add_known_host,
    ensure_client_key,
    parse_key_lines,
)

from .lvs import DIRECTOR_HOSTS, INV_HEAD, INV_TAIL
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


# -- the QEMU tier (tests/vm/test_rollout_vm.py) -----------------------------------------
# Two directors on the tiny-lvs image and three web servers on the web image (Debian:
# systemd, lighttpd, sshd), netbooted from `dsas serve`; the web hosts are the only ones
# that boot image web, so a rollout of the role moves the whole image and the
# inventory's version changes at its end.

VM_INVENTORY = INV_HEAD + """\
images:
  web: {version: current}
  tiny-lvs: {version: current}
services:
  master: {units: [dsas-serve]}
  web: {units: [lighttpd]}
  lvs: {units: [keepalived]}
roles:
  master: {services: [master], networks: [inside], boot: disk, hwtype: vm}
  lvs:
    services: [lvs]
    networks: [inside, outside]
    image: tiny-lvs
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
  web:
    services: [web]
    networks: [inside]
    image: web
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
""" + DIRECTOR_HOSTS + """\
  w1: {role: web, macs: ["52:54:00:18:00:71", "52:54:00:18:01:71"],
       addresses: {inside: 198.18.1.71}}
  w2: {role: web, macs: ["52:54:00:18:00:72", "52:54:00:18:01:72"],
       addresses: {inside: 198.18.1.72}}
  w3: {role: web, macs: ["52:54:00:18:00:73", "52:54:00:18:01:73"],
       addresses: {inside: 198.18.1.73}}
""" + INV_TAIL

VM_DIRECTORS = ("lvs1", "lvs2")
VM_WEB = ("w1", "w2", "w3")
# what the broken version's lighttpd.conf ends with: lighttpd -tt refuses it, so
# lighttpd.service fails at boot and dsas-init reports failed
BROKEN_LINE = 'server.port = "broken\n'


@dataclass(frozen=True)
class VmVersions:
    """The web image's versions in a test's own boot root."""

    a: str          # the build's (current)
    b: str          # the same files, another version (a good upgrade)
    broken: str     # its lighttpd does not start


def _own_store(dest: Path, names: tuple[str, ...]) -> tuple[ImageStore, dict[str, str]]:
    """The test's own image store under ``dest``: ``names`` built (into the shared
    TEST_BOOT_ROOT, cached), each built version hard-linked in with ``current`` on it,
    whatever another run has since made current in the shared root."""
    from provision.imaging.build import Builder, default_recipes_dir
    from provision.imaging.store import ImageStore

    from .clone import TEST_BOOT_ROOT, TEST_CACHE

    shared = ImageStore(TEST_BOOT_ROOT / "images")
    builder = Builder(default_recipes_dir(), shared, TEST_CACHE)
    store = ImageStore(dest / "images")
    built = {n: builder.build(n).version for n in names}
    for name, version in built.items():
        d = store.dir(name, version)
        d.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(shared.dir(name, version)), str(d)], check=True,
                       timeout=60)
        store.set_current(name, version)
    return store, built


def derive(store: ImageStore, image: str, src: str, version: str,
           edit: tuple[str, str] | None = None) -> None:
    """Another version of ``image`` in ``store``: ``src``'s files (hard links), or, with
    ``edit`` (a root fs path, a line), its rootfs repacked with the line appended to
    that file, and the manifest's sha256 and entry updated (the initramfs verifies
    them, as does ``store.verify``)."""
    from provision.imaging.result import file_entry
    from provision.imaging.store import dump_manifest, sha256_file

    s, d = store.dir(image, src), store.dir(image, version)
    d.mkdir()
    for f in ("vmlinuz", "initrd.img", *(["rootfs.tar.gz"] if edit is None else [])):
        (d / f).hardlink_to(s / f)
    m = dict(json.loads((s / "manifest.json").read_text()), version=version)
    if edit is not None:
        path, line = edit
        data = _repack(s / "rootfs.tar.gz", d / "rootfs.tar.gz", path, line)
        m["files"] = dict(m["files"], **{"rootfs.tar.gz": {
            "sha256": sha256_file(d / "rootfs.tar.gz"),
            "size": (d / "rootfs.tar.gz").stat().st_size}})
        entry = m["rootfs"][path]  # a sha256 (a rootfs recipe's), or an entry (Debian's)
        if isinstance(entry, str):
            entry = file_entry(data)["sha256"]
        else:
            entry = dict(entry, **{k: file_entry(data)[k] for k in ("sha256", "size")})
        m["rootfs"] = dict(m["rootfs"], **{path: entry})
    (d / "manifest.json").write_text(dump_manifest(m))
    assert not store.verify(image, version), store.verify(image, version)


def vm_boot_root(dest: Path) -> VmVersions:
    """A boot root of the test's own (``_own_store``: web and tiny-lvs), with two more
    versions of web: A's files under another version (``b``), and ``broken``, A with
    lighttpd.conf made invalid."""
    store, built = _own_store(dest, ("tiny-lvs", "web"))
    a = built["web"]
    versions = VmVersions(a, f"{a[:8]}b", f"{a[:8]}x")
    derive(store, "web", a, versions.b)
    derive(store, "web", a, versions.broken, ("etc/lighttpd/lighttpd.conf", BROKEN_LINE))
    return versions


# The disk tier (tests/vm/test_rollout_disk_vm.py): one host, d1, cloned by dsas-clone
# from tiny-lvs A onto an MBR disk and booted from it; `dsas rollout tiny-lvs@B --host d1`
# moves it by a push of B's root tree and a re-apply.
DISK_INVENTORY = INV_HEAD + """\
  vmdisk:
    nics: [eth0, eth1]
    modules: [virtio_net]
    disk:
      device: /dev/vda
      label: msdos
      boot: {device: /dev/vda1, size: 32M}
      fs:   {device: /dev/vda2, size: rest, mount: /}
images:
  tiny-lvs: {version: current}
services:
  master: {units: [dsas-serve]}
roles:
  master: {services: [master], networks: [inside], boot: disk, hwtype: vm}
  tools: {services: [], networks: [inside], hwtype: vmdisk, image: tiny-lvs, boot: disk,
          bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:18:00:01", "52:54:00:18:01:01"],
        addresses: {inside: 198.18.0.1}}
  d1: {role: tools, macs: ["52:54:00:18:00:41", "52:54:00:18:01:41"],
       addresses: {inside: 198.18.0.41}}
"""
# the line version B of tiny-lvs adds, and to which file of its root fs
DISK_EDIT = ("etc/profile", "# tiny-lvs, version B of the rollout test\n")


def disk_boot_root(dest: Path) -> tuple[str, str]:
    """A boot root of the test's own with tiny-lvs A (the build, current) and B (A with
    DISK_EDIT); (A, B)."""
    store, built = _own_store(dest, ("tiny-lvs",))
    a = built["tiny-lvs"]
    derive(store, "tiny-lvs", a, f"{a[:8]}b", DISK_EDIT)
    return a, f"{a[:8]}b"


def _repack(src: Path, dest: Path, path: str, line: str) -> bytes:
    """``src`` (a root fs .tar.gz) as ``dest`` with ``line`` appended to its file
    ``path``; the new file's bytes."""
    import io

    out = b""
    with tarfile.open(src, "r|gz") as tin, tarfile.open(dest, "w:gz", compresslevel=1,
                                                       format=tarfile.GNU_FORMAT) as tout:
        for m in tin:
            data = tin.extractfile(m) if m.isreg() else None
            if m.isreg() and m.name.lstrip("./") == path:
                assert data is not None
                out = data.read() + b"\n" + line.encode()
                m.size = len(out)
                data = io.BytesIO(out)
            tout.addfile(m, data)
    assert out, f"no {path} in {src}"
    return out


def vm_rollout(c: Any, state: Path, *args: str, ready_timeout: float = 1500,
               ) -> tuple[int, dict[str, Any], str, float]:
    """`dsas rollout ARGS --json` on a QEMU lab's master (a ``LabCluster``): (rc, its
    JSON, stderr, seconds)."""
    t = time.monotonic()
    r = c.master.run([DSAS, "rollout", *args, "--json", "-i", str(c.inventory_path),
                      "--state-dir", str(state), "--boot-root", str(c.boot_root),
                      "--timeout", "10", "--drain-timeout", "30", "--ready-timeout",
                      f"{ready_timeout:g}", "--check-timeout", "300"], check=False,
                     timeout=4000)
    took = time.monotonic() - t
    print(f"---- dsas rollout {' '.join(args)}: rc {r.returncode} in {took:.0f} s\n{r.stderr}")
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    return r.returncode, doc, r.stderr, took


def ready_images(c: Any, since: float) -> dict[str, list[str]]:
    """host -> the image@version of each ready report a QEMU lab's master recorded since
    ``since`` (wall clock)."""
    from provision.state import events as stored_events

    out: dict[str, list[str]] = {}
    for e in stored_events.read_only_since(c.workdir / "state" / "state.db", since):
        if e.stage == "ready":
            out.setdefault(e.host, []).append(e.image or "")
    return out
