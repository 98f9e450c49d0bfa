"""multicast.fixup_script: run for real (sh, coreutils) on a tree pre-linked from the
old release with uftp's staged files linked in, it must give the tree rsync's pass
would: the manifest the master computes for the source, and the old release intact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provision.push.multicast import _octal, fixup_script
from provision.push.prelink import attr_listing, delta_names
from provision.push.release import local_manifest


def tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_ino, st.st_mtime_ns,
                                         os.readlink(p) if p.is_symlink() else None)
    return out


def stage_and_fix(old: Path, new: Path, work: Path) -> tuple[Path, str | None]:
    """The node's side: incoming = hard links of old; the changed regular files
    linked in as new inodes (what apply_script does); then the fixup script."""
    lo, ln = attr_listing(str(old)), attr_listing(str(new))
    delta = delta_names(lo, ln)
    script = fixup_script(lo, ln, delta)
    inc = work / "incoming"
    subprocess.run(["cp", "-a", "-l", f"{old}/.", str(inc)], check=True)
    staged = work / "staged"
    for name in delta:
        entry = ln.get(name)
        if entry is not None and entry[0] == "f":
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(new / name, staged / name)
    if staged.exists():
        subprocess.run(["cp", "-a", "-l", "--remove-destination", f"{staged}/.", f"{inc}/"],
                       check=True)
    if script is not None:
        r = subprocess.run(["sh", "-c", script], cwd=inc, capture_output=True, text=True,
                           check=False)
        assert r.returncode == 0 and r.stdout.strip() == "FIXED 1", r.stderr
    return inc, script


def test_fixup_gives_the_sources_manifest_and_leaves_the_old_release(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    files = {f"d{i % 3}/f{i}.bin": os.urandom(500) for i in range(12)}
    files |= {"gone/deep/x": b"x", "kind/y": b"y", "top.txt": b"t"}
    tree(old, files)
    (old / "link").symlink_to("top.txt")
    os.utime(old / "d0", (1_000_000_000, 1_000_000_000))
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    # the update: content, a mode with setuid, a new directory (mode 0750) with a file,
    # a directory and a file gone, a directory become a symlink, symlinks made/changed
    (new / "d1/f1.bin").write_bytes(os.urandom(700))
    (new / "d2/f2.bin").write_bytes(os.urandom(10))
    os.chmod(new / "d2/f2.bin", 0o4750)
    tree(new, {"fresh/sub/n.txt": b"n"})
    os.chmod(new / "fresh/sub", 0o750)
    os.unlink(new / "d0/f0.bin")
    shutil.rmtree(new / "gone")
    shutil.rmtree(new / "kind")
    (new / "kind").symlink_to("d0")
    (new / "link").unlink()
    (new / "link").symlink_to("d1/f1.bin")
    (new / "fresh/l").symlink_to("sub/n.txt")
    os.utime(new / "d1/f1.bin", (1_500_000_000.25, 1_500_000_000.25))
    before = snapshot(old)
    inc, script = stage_and_fix(old, new, tmp_path)
    assert script is not None
    assert local_manifest(str(inc)) == local_manifest(str(new))
    assert snapshot(old) == before  # nothing went through a hard link into the old release
    assert (inc / "d1/f1.bin").stat().st_mtime_ns == (new / "d1/f1.bin").stat().st_mtime_ns


def test_without_the_fixup_the_tree_does_not_verify(tmp_path: Path) -> None:
    """The script is what makes the tree right: staged files alone are not."""
    old, new = tmp_path / "old", tmp_path / "new"
    tree(old, {"a/f": b"1", "b/g": b"2"})
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    (new / "a/f").write_bytes(b"changed")
    os.chmod(new / "a/f", 0o600)
    os.unlink(new / "b/g")
    lo, ln = attr_listing(str(old)), attr_listing(str(new))
    inc = tmp_path / "incoming"
    subprocess.run(["cp", "-a", "-l", f"{old}/.", str(inc)], check=True)
    os.unlink(inc / "a/f")
    shutil.copy2(new / "a/f", inc / "a/f")
    assert local_manifest(str(inc)) != local_manifest(str(new))
    script = fixup_script(lo, ln, delta_names(lo, ln))
    assert script is not None
    subprocess.run(["sh", "-c", script], cwd=inc, check=True, capture_output=True)
    assert local_manifest(str(inc)) == local_manifest(str(new))


def test_what_it_does_not_handle_goes_to_rsync(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    tree(old, {"a/f": b"1"})
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    os.mkfifo(new / "pipe")
    lo, ln = attr_listing(str(old)), attr_listing(str(new))
    assert fixup_script(lo, ln, delta_names(lo, ln)) is None
    # a directory become a file: apply's link of the staged file cannot replace it
    shutil.rmtree(new / "a")
    (new / "pipe").unlink()
    (new / "a").write_bytes(b"file now")
    ln = attr_listing(str(new))
    assert fixup_script(lo, ln, delta_names(lo, ln)) is None


@pytest.mark.parametrize(("perms", "octal"), [
    ("rwxr-xr-x", "0755"), ("rw-------", "0600"), ("rwsr-xr-x", "4755"),
    ("rwxr-Sr--", "2744"), ("rwxrwxrwt", "1777"), ("rw-r--r-T", "1644"),
    ("rwxr-xr-s", None), ("rwx", None), ("rwxr-xr-q", None)])
def test_modes(perms: str, octal: str | None) -> None:
    assert _octal(perms) == octal


def test_one_command_per_owner_and_mode(tmp_path: Path) -> None:
    """A node forks per command: forty changed files of one owner and two modes (and
    their directory, 0755) make one chown and three chmod lines, not forty of each."""
    old, new = tmp_path / "old", tmp_path / "new"
    tree(old, {f"d/f{i}": b"1" for i in range(40)})
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    for i in range(40):
        (new / f"d/f{i}").write_bytes(b"changed")
        os.chmod(new / f"d/f{i}", 0o600 if i % 2 else 0o644)
    inc, script = stage_and_fix(old, new, tmp_path)
    assert script is not None
    lines = script.splitlines()
    assert sum("chown" in line for line in lines) == 1
    assert sum(line.startswith("chmod ") for line in lines) == 3
    assert local_manifest(str(inc)) == local_manifest(str(new))
