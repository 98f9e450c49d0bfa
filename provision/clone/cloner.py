"""Doing the clone: loop devices and mounts (always undone), file systems, the copy,
the host's own files, the boot loader, verification, and the partition table last."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .. import layout as boot_layout
from .. import proc
from ..imaging.content import entries, verify_tree
from . import disklayout
from .disklayout import MIB
from .interrupts import deferred_interrupts
from .model import (
    EXTLINUX_DIRS,
    HOST_FILES,
    STEP_TIMEOUT,
    TAR_BLOCKING,
    TAR_CHECKPOINT,
    TAR_PROGRESS,
    CloneError,
    Plan,
    Progress,
    noprogress,
)
from .sources import children_cpu, grow_pipe, gunzip_program, rsync_argv, tar_progress


class Cloner:
    """Carries out a clone ``Plan``: partition, copy, configure, install the loader, verify."""

    def __init__(self, plan: Plan, progress: Progress = noprogress,
                 say: Callable[[str], None] = print):
        self.plan = plan
        self.progress = progress
        self.say = say
        self.loops: dict[int, str] = {}  # partition number -> /dev/loopN
        self.mounts: list[Path] = []
        self.work = Path(tempfile.mkdtemp(prefix="dsas-clone-"))
        self.root = self.work / "root"
        self.stats: dict[str, Any] = {}

    # loop devices and mounts, always undone

    def attach(self, p: disklayout.Part) -> str:
        argv = ["losetup", "--find", "--show", "--offset", str(p.start), "--sizelimit",
                str(p.size), str(self.plan.target)]
        dev = str(proc.run(argv, timeout=STEP_TIMEOUT).stdout).strip()
        self.loops[p.number] = dev
        return dev

    def mount(self, dev: str, at: Path, options: str = "") -> None:
        at.mkdir(parents=True, exist_ok=True)
        proc.run(["mount", *(["-o", options] if options else []), dev, str(at)],
                 timeout=STEP_TIMEOUT)
        self.mounts.append(at)

    def unmount_all(self) -> None:
        for at in reversed(self.mounts):
            proc.run(["umount", str(at)], timeout=120, check=False)  # best effort: cleanup
        self.mounts.clear()

    def detach_loops(self, timeout: float = 15) -> None:
        """Detach our loop devices and wait (bounded) until the kernel has let them go.

        A loop device still busy (a file system being torn down) is only marked for
        auto-clear by `losetup -d`; waiting here means no caller ever sees the target
        still attached after we return.
        """
        for dev in self.loops.values():
            proc.run(["losetup", "-d", dev], timeout=60, check=False)
        deadline = time.monotonic() + timeout
        for dev in self.loops.values():
            backing = Path("/sys/block") / Path(dev).name / "loop" / "backing_file"
            while backing.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
                proc.run(["losetup", "-d", dev], timeout=60, check=False)
        self.loops.clear()

    def cleanup(self) -> None:
        self.unmount_all()
        self.detach_loops()
        shutil.rmtree(self.work, ignore_errors=True)

    # steps

    def wipe(self) -> None:
        """No partition table from here until the very last step."""
        t = self.plan.target
        if not self.plan.is_block:
            with t.open("ab") as f:
                f.truncate(self.plan.size)
        with t.open("r+b") as f:
            f.write(b"\0" * MIB)
            f.seek(max(self.plan.size - MIB, MIB))
            f.write(b"\0" * MIB)
            f.flush()
            os.fsync(f.fileno())
        self.say(f"wiped the partition table of {t}: unusable until the clone completes")

    def make_filesystems(self) -> None:
        for p in self.plan.layout.parts:
            if p.part == "bios":
                continue
            dev = self.attach(p)
            argv = _mkfs_argv(p, dev)
            if argv:
                proc.run(argv, timeout=STEP_TIMEOUT)
            if p.fstype == "vfat":  # a FAT volume id is 8 hex digits, shown as XXXX-XXXX
                p.uuid = f"{p.uuid.replace('-', '')[:4]}-{p.uuid.replace('-', '')[4:8]}".upper()
            self.say(f"  {p.part}: {p.fstype} on {dev} ({p.size / MIB:.0f} MiB)")

    def mount_target(self, options: str = "") -> None:
        lo = self.plan.layout
        for p in lo.mount_order():
            at = self.root / lo.mount_point_of(p).lstrip("/")
            self.mount(self.loops[p.number], at, options)

    def copy(self) -> None:
        started, cpu = time.monotonic(), children_cpu()
        if self.plan.source.kind == "image":
            done = self._copy_image()
        else:
            done = self._copy_peer()
        for at in self.mounts:  # on the disk, not just in the page cache
            proc.run(["sync", "--file-system", str(at)], timeout=STEP_TIMEOUT)
        self.stats["copy_bytes"] = done
        self.stats["copy_seconds"] = time.monotonic() - started
        self.stats["copy_cpu_seconds"] = children_cpu() - cpu

    def _copy_image(self) -> int:
        """gunzip | tar, with a 1 MiB pipe and 1 MiB tar records (the default 64 KiB
        pipe and 10 KiB records cost more CPU than the decompression itself); the
        archive never passes through Python. tar's checkpoints give the progress."""
        src = self.plan.source
        assert src.path is not None
        archive = src.path / boot_layout.ROOTFS
        gunzip = gunzip_program()
        self.stats["gunzip"] = gunzip
        tar_argv = ["tar", "-b", str(TAR_BLOCKING), "-xpf", "-", "--numeric-owner",
                    "-C", str(self.root), f"--checkpoint={TAR_CHECKPOINT}",
                    f"--checkpoint-action=echo={TAR_PROGRESS} %{{r}}T"]
        with tempfile.TemporaryFile("w+") as gz_err, ExitStack() as children:
            with deferred_interrupts():  # never a child started but not known to children
                unzip = children.enter_context(proc.spawn(
                    [gunzip, "-dc", str(archive)], stdout=subprocess.PIPE, stderr=gz_err))
                assert unzip.stdout is not None
                grow_pipe(unzip.stdout.fileno())
                tar = children.enter_context(proc.spawn(
                    tar_argv, stdin=unzip.stdout, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True))
                unzip.stdout.close()  # tar holds the read end now
            err = self._follow_tar(tar, src.size)
            gz_rc = proc.wait(unzip, 60)
            gz_err.seek(0)
            err = (gz_err.read() + "\n" + err).strip()
        if tar.returncode != 0 or gz_rc != 0:
            raise CloneError(f"unpacking {archive} failed ({gunzip} {proc.status(gz_rc)}, "
                             f"tar {proc.status(tar.returncode)}): {proc.tail(err)}")
        self.progress("copy", src.size, src.size)
        return src.size

    def _follow_tar(self, tar: subprocess.Popen[str], total: int) -> str:
        """Progress from tar's checkpoint lines until it exits; its other stderr lines."""
        assert tar.stderr is not None
        err: list[str] = []
        with tar.stderr:
            for line in tar.stderr:  # ends when tar exits
                done = tar_progress(line)
                if done is None:
                    err.append(line.rstrip())
                else:
                    self.progress("copy", min(done, total - 1), total)
        proc.wait(tar, 600)
        return "\n".join(err)

    def _copy_peer(self) -> int:
        src = self.plan.source
        argv = rsync_argv(src, str(self.root) + "/", ["--info=progress2", "--no-inc-recursive"])
        with proc.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        bufsize=1) as child:
            assert child.stdout is not None and child.stderr is not None
            for line in proc.lines(child.stdout):  # rsync redraws its progress with \r
                fields = line.split()
                if fields and fields[0].replace(",", "").isdigit():
                    self.progress("copy", int(fields[0].replace(",", "")), src.size)
            err = child.stderr.read()
            rc = proc.wait(child, 600)
        if rc != 0:
            raise CloneError(f"rsync from {src.peer_address} failed ({proc.status(rc)}): "
                             f"{proc.tail(err)}")
        return src.size

    def host_files(self) -> None:
        r, plan = self.root, self.plan
        etc = r / "etc"
        etc.mkdir(exist_ok=True)
        _write(etc / "dsas.conf", plan.conf, 0o644)
        _write(etc / "fstab", disklayout.fstab(plan.layout), 0o644)
        _write(etc / "hostname", plan.host.name + "\n", 0o644)
        fqdn = f"{plan.host.name}.{plan.source.manifest.get('domain', '')}".rstrip(".")
        addr = plan.host.primary_interface.address
        _write(etc / "hosts", f"127.0.0.1 localhost\n{addr} {fqdn} {plan.host.name}\n", 0o644)
        _write(etc / "machine-id", "", 0o444)
        ssh = etc / "ssh"
        ssh.mkdir(exist_ok=True)
        for old in ssh.glob("ssh_host_*"):
            old.unlink()
        proc.run(["ssh-keygen", "-A", "-f", str(r)], timeout=STEP_TIMEOUT)
        record = r / "var/lib/dsas"
        record.mkdir(parents=True, exist_ok=True)
        _write(record / "clone.json", _json({
            "host": plan.host.name, "source": plan.source.describe(),
            "image": plan.source.image, "version": plan.source.version,
            "cloned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}), 0o644)
        self.say(f"  wrote /etc/dsas.conf ({plan.host.name}), fstab, hostname, hosts, "
                 "fresh SSH host keys")

    def boot_loader(self) -> None:
        lo, plan = self.plan.layout, self.plan
        boot_dir = self.root / "boot"
        boot_dir.mkdir(exist_ok=True)
        kernels = sorted(boot_dir.glob("vmlinuz-*"))
        if kernels:
            kernel = kernels[-1]
            initrd = boot_dir / kernel.name.replace("vmlinuz-", "initrd.img-", 1)
        elif plan.source.path is not None:  # a busybox image: its netboot kernel
            kernel, initrd = boot_dir / "vmlinuz", boot_dir / "initrd.img"
            shutil.copyfile(plan.source.path / boot_layout.KERNEL, kernel)
            shutil.copyfile(plan.source.path / boot_layout.INITRD, initrd)
        else:
            raise CloneError("no kernel in /boot of the copied tree")
        if not initrd.is_file():
            raise CloneError(f"no initrd for {kernel.name} in /boot")
        prefix = "/" if lo.boot is not lo.root else "/boot/"
        ext = boot_dir / "extlinux"
        ext.mkdir(exist_ok=True)
        _write(ext / "extlinux.conf",
               disklayout.extlinux_conf(lo, prefix + kernel.name, prefix + initrd.name,
                                        plan.append), 0o644)
        proc.run(["extlinux", "--install", str(ext)], timeout=STEP_TIMEOUT)
        self.say(f"  extlinux on the {lo.boot.part} partition: {kernel.name}")

    def verify(self) -> list[str]:
        src = self.plan.source
        started = time.monotonic()
        if src.kind == "image":
            want = entries(src.manifest)
            total = sum(e.size or 0 for e in want.values())
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                self.progress("verify", done[0], total or src.size)
            problems, nbytes = verify_tree(self.root, want, HOST_FILES | _ssh_keys(want), tick)
            self.progress("verify", nbytes, nbytes)
            self.stats["verified_files"] = sum(1 for e in want.values() if e.type == "file")
        else:
            argv = rsync_argv(src, str(self.root) + "/",
                              ["-n", "-c", "--itemize-changes", "--delete"])
            out = str(proc.run(argv, timeout=900).stdout)
            problems = [f"differs from the peer: {line}" for line in out.splitlines()
                        if line.strip() and not line.startswith(".d..t")]
            nbytes = src.size
        self.stats["verify_seconds"] = time.monotonic() - started
        self.stats["verify_bytes"] = nbytes
        return problems

    def fsck(self) -> None:
        for p in self.plan.layout.parts:
            if p.fstype.startswith("ext"):
                argv = ["e2fsck", "-f", "-n", self.loops[p.number]]
            elif p.fstype == "xfs":
                argv = ["xfs_repair", "-n", self.loops[p.number]]
            else:
                continue
            res = proc.run(argv, timeout=600, check=False)  # what it found: on stdout
            if res.returncode != 0:
                raise CloneError(f"fsck of the {p.part} partition is not clean: "
                                 f"{res.stdout.strip()[-300:]}")
        self.say("  fsck: every file system clean")

    def write_table(self) -> None:
        """The last step: the partition table and the boot code."""
        t, lo = self.plan.target, self.plan.layout
        self.detach_loops()
        script = disklayout.sfdisk_script(lo, str(t))
        proc.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(t)], input=script,
                 timeout=STEP_TIMEOUT)
        mbr = _extlinux_file("gptmbr.bin" if lo.label == "gpt" else "mbr.bin")
        with t.open("r+b") as f:
            f.write(mbr.read_bytes()[:440])
            f.flush()
            os.fsync(f.fileno())
        if self.plan.is_block:
            proc.run(["blockdev", "--rereadpt", str(t)], timeout=60, check=False)  # a hint only
        self.say(f"wrote the {lo.label} partition table and boot code: {t} is ready")

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.wipe()
        try:
            self.say("making file systems")
            self.make_filesystems()
            self.mount_target()
            self.say(f"copying {self.plan.source.describe()}")
            self.copy()
            self.host_files()
            self.boot_loader()
            proc.run(["sync"], timeout=STEP_TIMEOUT)
            self.say("verifying")
            problems = self.verify()
            if problems:
                for p in problems[:20]:
                    self.say(f"  MISMATCH {p}")
                raise CloneError(f"verification failed: {len(problems)} difference(s)")
            self.unmount_all()
            self.fsck()
            self.write_table()
        except BaseException:
            self.unmount_all()
            raise
        finally:
            self.cleanup()
        self.stats["seconds"] = time.monotonic() - started
        return self.stats


def _mkfs_argv(p: disklayout.Part, dev: str) -> list[str]:
    """The command that makes ``p``'s file system (or swap) on ``dev``; none for others."""
    label = p.part
    if p.fstype == "swap":
        return ["mkswap", "-U", p.uuid, "-L", label, dev]
    if p.fstype.startswith("ext"):
        return [f"mkfs.{p.fstype}", "-F", "-q", "-U", p.uuid, "-L", label, dev]
    if p.fstype == "xfs":
        return ["mkfs.xfs", "-f", "-q", "-m", f"uuid={p.uuid}", "-L", label, dev]
    if p.fstype == "vfat":
        return ["mkfs.vfat", "-i", p.uuid.replace("-", "")[:8], "-n", label.upper(), dev]
    return []


def _ssh_keys(want: dict[str, Any]) -> set[str]:
    return {p for p in want if p.startswith("etc/ssh/ssh_host_")}


def _extlinux_file(name: str) -> Path:
    for d in EXTLINUX_DIRS:
        if (Path(d) / name).is_file():
            return Path(d) / name
    raise CloneError(f"{name} not found (Debian package syslinux-common / extlinux)")


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"
