"""Copy this master's dsas installation to a joining host (issue 18, `dsas master join`).

What is copied is what ``make install`` lays down: the self-contained virtualenv at
PREFIX (with share/dsas), the command links in BINDIR, the man pages and the systemd
unit. The same paths are used on HOST (the venv's scripts name PREFIX). Steps, over
the join's verified SSH connection:

1. HOST's ``python3`` must be the venv's version (the venv links to it), else refused
   and HOST left untouched.
2. A tar of the installation is streamed on ssh's stdin into a staging directory
   beside PREFIX; its sha256 manifest (itself checked against a digest given on the
   command line) is verified there. A mismatch removes the staging directory: the
   previous installation stays.
3. The swap: the old PREFIX renamed aside, the new one renamed in, the unit, man pages
   and links put in place (each a rename); on any failure in this step the old PREFIX
   is renamed back. ``systemctl daemon-reload`` where systemctl exists.
4. ``PREFIX/bin/dsas --version`` must answer this version; else the old PREFIX is
   put back. Only then is the old one removed.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .join import JoinError, Remote

COPY_TIMEOUT = 900.0  # s for the copy of a whole installation
COMMANDS = ("dsas", "dsas-push", "dsas-clone")


@dataclass(frozen=True)
class Installation:
    """An installed dsas (``make install``'s layout)."""

    prefix: Path
    bindir: Path = Path("/usr/local/bin")
    mandir: Path = Path("/usr/local/share/man")
    unitdir: Path = Path("/etc/systemd/system")
    commands: tuple[str, ...] = field(default=COMMANDS)

    @classmethod
    def find(cls, install_from: str | None) -> Installation:
        """The installation this dsas runs from (sys.prefix), or ``install_from``."""
        prefix = Path(install_from) if install_from else Path(sys.prefix)
        why = installed_problem(prefix)
        if why:
            hint = "" if install_from else " (give --install-from PREFIX, or --no-install)"
            raise JoinError(f"{prefix} is not an installed dsas (`make install`): {why}{hint}")
        return cls(prefix.resolve())

    def python_version(self) -> str:
        """The venv's Python, "3.11" (from pyvenv.cfg)."""
        for line in (self.prefix / "pyvenv.cfg").read_text().splitlines():
            k, _, v = line.partition("=")
            if k.strip() in ("version", "version_info"):
                return ".".join(v.strip().split(".")[:2])
        raise JoinError(f"{self.prefix}/pyvenv.cfg names no Python version")

    def extras(self) -> list[Path]:
        """The unit and man pages that exist here (absolute paths, copied as they are)."""
        out = [self.unitdir / "dsas-serve.service"]
        man1 = self.mandir / "man1"
        if man1.is_dir():
            out += sorted(man1.glob("dsas*.1"))
        return [p for p in out if p.is_file()]


def installed_problem(prefix: Path) -> str | None:
    for rel in ("pyvenv.cfg", "bin/dsas", "share/dsas"):
        if not (prefix / rel).exists():
            return f"no {rel} there"
    return None


def pack(inst: Installation, out: IO[bytes]) -> str:
    """The installation as a tar into ``out``: ``prefix/`` the tree, ``files/<abs>`` the
    extras, ``MANIFEST`` (sha256sum format). Returns the MANIFEST's sha256."""
    lines: list[str] = []
    with tarfile.open(fileobj=out, mode="w|") as tar:

        def add(path: Path, arc: str) -> None:
            info = tar.gettarinfo(str(path), arc)
            if info.isreg():
                data = path.read_bytes()  # read once: what is hashed is what is sent
                info.size = len(data)
                lines.append(f"{hashlib.sha256(data).hexdigest()}  {arc}")
                tar.addfile(info, io.BytesIO(data))
            elif info.isdir() or info.issym():
                tar.addfile(info)

        add(inst.prefix, "prefix")
        for p in sorted(inst.prefix.rglob("*")):
            add(p, "prefix/" + p.relative_to(inst.prefix).as_posix())
        for p in inst.extras():
            add(p, "files" + p.as_posix())
        manifest = ("\n".join(lines) + "\n").encode()
        info = tarfile.TarInfo("MANIFEST")
        info.size, info.mode = len(manifest), 0o644
        tar.addfile(info, io.BytesIO(manifest))
    return hashlib.sha256(manifest).hexdigest()


def check_python(remote: Remote, inst: Installation) -> None:
    want = inst.python_version()
    got = remote.run("python3 --version", "command -v python3 >/dev/null 2>&1 || "
                     "{ echo 'no python3' >&2; exit 3; }; python3 -c "
                     "'import sys; print(\"%d.%d\" % sys.version_info[:2])'").strip()
    if got != want:
        raise JoinError(f"{remote.host} has Python {got}, this dsas's venv needs {want}: "
                        "not installed (give it the same python3, or install dsas there)")


def _paths(inst: Installation) -> tuple[str, str, str]:
    """PREFIX, its staging directory, the old PREFIX set aside."""
    p = str(inst.prefix)
    return p, p + ".dsas-stage", p + ".dsas-old"


def send(remote: Remote, inst: Installation, payload: IO[bytes], manifest_sha: str) -> None:
    """Stage, verify and swap in (steps 2 and 3 of the module's docstring)."""
    p, stage, old = _paths(inst)
    qp, qs, qo = shlex.quote(p), shlex.quote(stage), shlex.quote(old)
    links = " ".join(shlex.quote(c) for c in inst.commands)
    script = f"""set -e
trap 'cd /; rm -rf {qs}' EXIT
rm -rf {qs} && mkdir -p {qs}
tar -x -f - -C {qs}
cd {qs}
bad() {{ cd /; rm -rf {qs}
  echo "checksum mismatch: $1 (the previous install is kept)" >&2; exit 4; }}
echo {manifest_sha}'  MANIFEST' | sha256sum -c --status || bad MANIFEST
sha256sum -c --quiet MANIFEST >sums.out 2>&1 || bad "$(grep -m1 FAILED sums.out || echo files)"
cd /
rm -rf {qo}
if [ -e {qp} ]; then mv {qp} {qo}; fi
mv {qs}/prefix {qp} || {{ if [ -e {qo} ]; then mv {qo} {qp}; fi; exit 5; }}
back() {{ cd /; if [ -e {qo} ]; then rm -rf {qp}; mv {qo} {qp}; fi; rm -rf {qs}; }}
trap back EXIT
if [ -d {qs}/files ]; then
  (cd {qs}/files && find . -type f) | while read -r f; do
    t="${{f#.}}"; mkdir -p "$(dirname "$t")"; cp -p {qs}/files"$t" "$t.dsas-new"
    mv -f "$t.dsas-new" "$t"; done
fi
mkdir -p {shlex.quote(str(inst.bindir))}
for c in {links}; do
  if [ -e {qp}/bin/"$c" ]; then ln -sfn {qp}/bin/"$c" {shlex.quote(str(inst.bindir))}/"$c"; fi
done
trap - EXIT
rm -rf {qs}
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload; fi
"""
    remote.run("copying dsas", script, payload, timeout=COPY_TIMEOUT)


def finish(remote: Remote, inst: Installation, version: str) -> None:
    """Step 4: the new dsas answers ``version``, else the old PREFIX goes back."""
    p, _, old = _paths(inst)
    qp, qo, qd = shlex.quote(p), shlex.quote(old), shlex.quote(p + "/bin/dsas")
    got = remote.run("the new dsas --version", f"{qd} --version || true").strip()
    if got != version:
        remote.run("putting the old dsas back",
                   f"if [ -e {qo} ]; then rm -rf {qp} && mv {qo} {qp}; fi")
        raise JoinError(f"the dsas copied to {remote.host} answers {got!r}, not {version!r}: "
                        "the previous install is back")
    remote.run("removing the old dsas", f"rm -rf {qo}")


def install(remote: Remote, inst: Installation, version: str,
            echo: Callable[[str], object] = lambda _m: None) -> None:
    """Steps 1-4: HOST gets this installation (one-line JoinError on any failure)."""
    check_python(remote, inst)
    with tempfile.TemporaryFile() as tmp:
        echo(f"    packing {inst.prefix}")
        sha = pack(inst, tmp)
        size = tmp.tell()
        tmp.seek(0)
        echo(f"    copying {size / 2**20:.1f} MiB to {remote.host}, verifying its sha256 sums")
        send(remote, inst, tmp, sha)
    finish(remote, inst, version)
