"""QEMU guests for the lab: real firmware PXE-booting over taps on a lab bridge.

A guest runs ``qemu-system-x86_64 -accel tcg`` inside a lab namespace, one tap
per NIC (fixed MACs), its serial console in a log file and its HMP monitor on a
unix socket (for ``set_link``: pulling a cable). Firmware: ``bios`` (SeaBIOS,
whose NIC option ROM is iPXE from Debian's ipxe-qemu) or ``uefi`` (OVMF).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Lab, LabError, Netns, tool

OVMF_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")
# Secure Boot on, Microsoft's keys enrolled (what a real server ships with): the ovmf
# package's secboot build (needs SMM, so q35) and its pre-enrolled variables.
OVMF_SECURE_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",)
OVMF_SECURE_VARS = ("/usr/share/OVMF/OVMF_VARS_4M.ms.fd",)
# firmware: bios | uefi (OVMF, PXE) | uefi-http (OVMF, HTTP boot only: QEMU tells OVMF
# not to make PXE boot options, so its HTTPv4 option comes first) | uefi-secure |
# uefi-pxe6 (OVMF, no PXE over IPv4: its PXEv6 option, DHCPv6, comes first)
FIRMWARES = ("bios", "uefi", "uefi-http", "uefi-secure", "uefi-pxe6")
NO_PXE4 = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
NO_PXE = [*NO_PXE4, "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]


@dataclass
class GuestSpec:
    """What a QEMU guest is: its NICs, firmware, memory and what it boots."""

    name: str
    macs: list[str]
    firmware: str = "bios"  # one of FIRMWARES
    memory_mib: int = 512
    nic_model: str = "virtio-net-pci"
    disk: Path | None = None  # a raw disk image to attach (virtio)
    kernel: Path | None = None  # direct kernel boot instead of PXE
    initrd: Path | None = None
    append: str = ""
    shell: bool = False  # a virtconsole (hvc0) for the image's test shell (dsas.shell=hvc0)
    extra: list[str] = field(default_factory=list)


def _first(paths: tuple[str, ...]) -> str:
    for p in paths:
        if Path(p).exists():
            return p
    raise LabError(f"missing firmware {paths[0]} (Debian package ovmf)")


class Guest:
    """A QEMU guest in a lab namespace, with its serial log and monitor."""

    def __init__(self, lab: Lab, ns: Netns, spec: GuestSpec, taps: list[str], workdir: Path):
        if len(taps) != len(spec.macs):
            raise ValueError("one tap per MAC")
        self.lab, self.ns, self.spec, self.taps = lab, ns, spec, taps
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.serial = workdir / f"{spec.name}.serial.log"
        self.serial_sock = workdir / f"{spec.name}.serial"
        self.shell_path = workdir / f"{spec.name}.hvc0"
        self.monitor_path = workdir / f"{spec.name}.monitor"
        self.proc: subprocess.Popen[Any] | None = None
        self.started_at: float | None = None
        self._offset = 0

    def _uefi_argv(self) -> list[str]:
        """OVMF (Secure Boot's with uefi-secure) and its own copy of the variables."""
        s = self.spec
        argv: list[str] = []
        secure = s.firmware == "uefi-secure"
        code = _first(OVMF_SECURE_CODE if secure else OVMF_CODE)
        vars_copy = self.workdir / f"{s.name}.vars.fd"
        shutil.copyfile(_first(OVMF_SECURE_VARS if secure else OVMF_VARS), vars_copy)
        if secure:
            argv += ["-machine", "q35,smm=on",
                     "-global", "driver=cfi.pflash01,property=secure,value=on"]
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        if s.firmware == "uefi-http":
            argv += NO_PXE
        elif s.firmware == "uefi-pxe6":
            argv += NO_PXE4
        return argv

    def argv(self) -> list[str]:
        s = self.spec
        argv = [
            tool("qemu-system-x86_64"), "-accel", "tcg", "-m", str(s.memory_mib),
            "-name", s.name, "-nographic", "-no-reboot", "-display", "none",
            "-chardev", f"socket,id=s0,path={self.serial_sock},server=on,wait=off,"
                        f"logfile={self.serial}",
            "-serial", "chardev:s0",
            "-monitor", f"unix:{self.monitor_path},server,nowait",
        ]
        if s.firmware not in FIRMWARES:
            raise LabError(f"unknown firmware {s.firmware!r} (known: {', '.join(FIRMWARES)})")
        uefi = s.firmware.startswith("uefi")
        if uefi:
            argv += self._uefi_argv()
        for i, (mac, tap) in enumerate(zip(s.macs, self.taps, strict=True)):
            # UEFI guests get no iPXE option ROM: OVMF's own PXE (EDK2 PxeBcDxe) boots,
            # as a real machine's firmware would, and chainloads ipxe.efi from the master.
            rom = ",romfile=" if uefi else ""
            argv += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no",
                     "-device", f"{s.nic_model},netdev=n{i},mac={mac},id=nic{i}{rom}"
                     + (",bootindex=1" if i == 0 and not (s.kernel or s.disk) else "")]
        if s.shell:
            argv += ["-device", "virtio-serial-pci",
                     "-chardev", f"socket,id=ctl,path={self.shell_path},server=on,wait=off",
                     "-device", "virtconsole,chardev=ctl"]
        if s.disk:
            argv += ["-drive", f"file={s.disk},format=raw,if=none,id=disk0",
                     "-device", "virtio-blk-pci,drive=disk0,bootindex=1"]
        if s.kernel:
            argv += ["-kernel", str(s.kernel)]
            if s.initrd:
                argv += ["-initrd", str(s.initrd)]
            if s.append:
                argv += ["-append", s.append]
        elif not s.disk:
            argv += ["-boot", "n"]
        return argv + s.extra

    def start(self) -> None:
        self.serial.write_bytes(b"")
        self._offset = 0
        with (self.workdir / f"{self.spec.name}.qemu.log").open("wb") as err:
            self.proc = self.ns.popen(self.argv(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err)
        self.started_at = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - (self.started_at or time.monotonic())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        """Wait (bounded) for ``pattern`` on the serial console; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console(), since)
            if m:
                return m
            if not self.running():
                raise LabError(f"{self.spec.name}: QEMU exited before {pattern!r}; "
                               f"console tail:\n{self.console()[-1500:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.spec.name}: no {pattern!r} within {timeout:.0f}s; "
                                   f"console tail:\n{self.console()[-1500:]}")
            time.sleep(0.25)

    def shell(self, timeout: float = 10) -> Shell:
        """A root shell on the guest's hvc0 (needs ``spec.shell`` and ``dsas.shell=hvc0``)."""
        if not self.spec.shell:
            raise LabError(f"{self.spec.name}: started without a shell console")
        return Shell(self.shell_path, timeout)

    def monitor(self, command: str, timeout: float = 5) -> str:
        """One HMP command over the monitor socket; returns its output."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.monitor_path))
            buf = b""
            deadline = time.monotonic() + timeout
            while b"(qemu)" not in buf and time.monotonic() < deadline:
                buf += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            out = b""
            while out.count(b"(qemu)") < 1 and time.monotonic() < deadline:
                try:
                    chunk = s.recv(4096)
                except TimeoutError:
                    break
                if not chunk:
                    break
                out += chunk
        return out.decode(errors="replace")

    def set_link(self, nic: int, up: bool) -> None:
        """Pull (or plug back) the cable of NIC ``nic``."""
        self.monitor(f"set_link nic{nic} {'on' if up else 'off'}")

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)


class Shell:
    """A root shell on a guest's hvc0 (a QEMU virtconsole on a unix socket).

    The tiny image's ``serial-shell`` reads and runs one line at a time, with no
    prompt and no echo, so each command's output is framed by a marker.
    """

    def __init__(self, path: Path, timeout: float = 10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.sock.settimeout(0.5)
        self._n = 0

    def run(self, command: str, timeout: float = 20) -> tuple[int, str]:
        """Run one command; (exit status, output) with the echoed command line removed."""
        self._n += 1
        marker = f"__DSAS_END_{self._n}__"
        self.sock.sendall(f"{command}; echo {marker} $?\n".encode())
        rx = re.compile(re.escape(marker) + r" (\d+)")
        buf = ""
        deadline = time.monotonic() + timeout
        while not rx.search(buf):
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest shell: no answer to {command!r}; got {buf[-800:]!r}")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            buf += chunk.decode(errors="replace")
        m = rx.search(buf)
        assert m is not None
        out = buf[: m.start()].replace("\r", "")
        out = "\n".join(line for line in out.splitlines() if marker not in line)
        return int(m.group(1)), out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_shell(guest: Guest, attempts: int = 40) -> Shell:
    """The guest's shell once it answers (it starts after dsas-init); bounded."""
    shell = guest.shell()
    for _ in range(attempts):
        try:
            status, out = shell.run("echo shell-ok", timeout=1.5)
            if status == 0 and "shell-ok" in out:
                return shell
        except TimeoutError:
            pass
    shell.close()
    raise TimeoutError(f"{guest.spec.name}: no shell on hvc0")
