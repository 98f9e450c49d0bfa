"""The push lab: an SSH farm (lab.sshfarm) with dsas-push run against it, and what
the push tests check on the nodes (test_push_lab, test_push_silent_lab,
test_push_uftp_lab)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab.sshfarm import MOUNT, SshFarm, build_farm
from lab.testing import require_tool

TO = f"{MOUNT}/site"


CLI = [sys.executable, "-c", "import sys; from provision.cli.push import main; sys.exit(main())"]


DSAS = [sys.executable, "-c", "import sys; from provision.cli.main import main; sys.exit(main())"]


@dataclass
class PushLab:
    farm: SshFarm
    inventory: Path
    state: Path
    src: Path

    def push(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.farm.master.run([*CLI, *args, "-i", str(self.inventory), "--state-dir",
                                     str(self.state), "--to", TO], timeout=timeout, check=False)

    def push_bg(self, *args: str) -> subprocess.Popen[str]:
        return self.farm.master.popen([*CLI, *args, "-i", str(self.inventory), "--state-dir",
                                       str(self.state), "--to", TO],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def dsas(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.farm.master.run([*DSAS, *args], timeout=60, check=False)

    def node(self, name: str):  # noqa: ANN201
        return next(n for n in self.farm.nodes if n.name == name)

    def live(self, name: str) -> str | None:
        link = self.node(name).root / "site"
        return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None

    def trust(self, name: str) -> None:
        node = self.node(name)
        keyfile = node.dir / "ssh_host_ed25519_key.pub"  # what the node's boot report carries
        r = self.dsas("trust", name, "-i", str(self.inventory), "--state-dir", str(self.state),
                      "--key-file", str(keyfile), "--yes")
        assert r.returncode == 0, r.stderr


def make_lab(lab, tmp_path: Path, count: int = 3, tmpfs_mib=64, trust: bool = True) -> PushLab:  # noqa: ANN001
    for t in ("rsync", "sshd", "ssh", "ssh-keygen", "nsenter"):
        require_tool(t)
    farm = build_farm(lab, tmp_path / "farm", count, tmpfs_mib)
    inv = tmp_path / "cluster.yaml"
    inv.write_text(farm.inventory_yaml())
    state = tmp_path / "state"
    from provision.sshtrust.sshconf import SshConfig, ensure_client_key
    key = ensure_client_key(SshConfig(state))
    farm.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    pl = PushLab(farm, inv, state, tmp_path / "src")
    if trust:
        for n in farm.nodes:
            pl.trust(n.name)
    return pl


def write_tree(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: type, mode, content (or link target), mtime."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", st.st_mode)
            else:
                out[rel] = ("f", st.st_mode, p.read_bytes(), int(st.st_mtime))
    return out


def assert_ok(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"


def release_of(r: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"ok release (\S+)", r.stdout)
    assert m, r.stdout
    return m.group(1)


def push_lands_everywhere(pl: PushLab, *args: str) -> subprocess.CompletedProcess[str]:
    """``dsas-push ARGS`` succeeds and every node of the farm has the new release live,
    byte-exact with the source (``pl.src``)."""
    r = pl.push(str(pl.src), *args)
    assert_ok(r)
    rel = release_of(r)
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel and snapshot(n.root / "site") == expect, n.name
    return r
