"""`make lint` runs shellcheck over the Makefile's SH_SCRIPTS, DASH_SCRIPTS and
BASH_SCRIPTS, each with its shell: every shell script in the tree is in one of them,
in the list of the shell its first line (or its `# shellcheck shell=`) names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LISTS = ("SH_SCRIPTS", "DASH_SCRIPTS", "BASH_SCRIPTS")


def makefile_lists() -> dict[str, list[str]]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    out = {}
    for name in LISTS:
        m = re.search(rf"^{name}\s*:=(.*)$", text, re.M)
        assert m, f"Makefile: no {name}"
        out[name] = m.group(1).split()
    return out


def shell_of(path: Path) -> str | None:
    """sh or bash, from the first line or a shellcheck directive; None: not a script."""
    try:
        head = path.read_bytes()[:400].decode()
    except (UnicodeDecodeError, OSError):
        return None
    first = head.split("\n", 1)[0]
    m = re.match(r"#!\s*(?:/usr/bin/env\s+)?\S*?(\w+)\s*$", first)
    if m and m.group(1) in ("sh", "dash", "bash"):
        return "bash" if m.group(1) == "bash" else "sh"
    m = re.search(r"^# shellcheck shell=(\w+)", head, re.M)
    if m:
        return "bash" if m.group(1) == "bash" else "sh"
    return "sh" if path.suffix == ".sh" else None


def test_every_shell_script_is_linted_with_its_shell() -> None:
    git = shutil.which("git")
    assert git, "git is not installed"
    files = subprocess.run([git, "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    scripts = {f: s for f in files if (ROOT / f).is_file() and
               (s := shell_of(ROOT / f)) is not None}
    lists = makefile_lists()
    listed = {f: name for name, fs in lists.items() for f in fs}
    for f in listed:
        assert (ROOT / f).is_file(), f"Makefile lists {f}, which is not there"
    missing = sorted(set(scripts) - set(listed))
    assert not missing, f"shell scripts that make lint does not check: {missing}"
    for f, shell in scripts.items():
        want = ("BASH_SCRIPTS",) if shell == "bash" else ("SH_SCRIPTS", "DASH_SCRIPTS")
        assert listed[f] in want, f"{f} is a {shell} script but in {listed[f]}"
