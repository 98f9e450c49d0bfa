"""The manual pages (tools/manpages.py, `make man`): NAME lines, sections, no build
path, one page per command, and groff renders them without a warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.testing import require_tool
from tests.support.paths import ROOT

SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "EXIT STATUS",
            "ENVIRONMENT", "FILES", "SEE ALSO")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    subprocess.run([sys.executable, str(ROOT / "tools" / "manpages.py"), str(out)],
                   check=True, capture_output=True, timeout=120)
    return {p.name: p.read_text() for p in sorted(out.glob("*.1"))}


def section(text: str, name: str) -> str:
    m = re.search(rf'^\.SH "?{name}"?\n(.*?)(?=^\.SH |\Z)', text, re.M | re.S)
    assert m, name
    return m.group(1)


def test_one_page_per_command_and_program(pages: dict[str, str]) -> None:
    for name in ("dsas.1", "dsas-check.1", "dsas-serve.1", "dsas-demo.1", "dsas-image-build.1",
                 "dsas-push.1", "dsas-push-group.1", "dsas-push-log.1", "dsas-clone.1"):
        assert name in pages, sorted(pages)
    # the program's page is the program's, not the `dsas push` group's
    assert "\\fB\\-\\-rollback\\fR" in pages["dsas-push.1"]
    assert section(pages["dsas-push-group.1"], "COMMANDS").count("dsas\\-push\\-log") == 1


def test_name_lines_sections_and_no_build_path(pages: dict[str, str]) -> None:
    assert section(pages["dsas.1"], "NAME").strip() == \
        "dsas \\- netboot provisioning and image distribution for server farms"
    for name, text in pages.items():
        prog = name[:-2].replace("-", "\\-")
        line = section(text, "NAME").strip()
        assert re.fullmatch(rf"{re.escape(prog)} \\- [^\n]+", line), (name, line)
        assert not line.endswith("...") and " \\- dsas" not in line, (name, line)  # no cut
        for s in SECTIONS:
            assert re.search(rf'^\.SH "?{s}"?$', text, re.M), (name, s)
        assert str(ROOT) not in text and "/work/" not in text, name
        assert ".venv" not in text and "on this machine" not in text, name


def test_examples_are_separate_verbatim_blocks(pages: dict[str, str]) -> None:
    ex = section(pages["dsas-push.1"], "EXAMPLES")
    blocks = re.findall(r"^\.nf\n\.RS 4\n(.*?)\n\.RE\n\.fi$", ex, re.M | re.S)
    assert len(blocks) == 3 and all(b.startswith("dsas\\-push ") for b in blocks), ex
    # the help's own \b block stays verbatim: one line per command, not one paragraph
    desc = section(pages["dsas-push.1"], "DESCRIPTION")
    verbatim = re.search(r"^\.nf\n\.RS 4\n(.*?)\n\.RE\n\.fi$", desc, re.M | re.S)
    assert verbatim and len(verbatim.group(1).splitlines()) == 4, desc


def test_groff_renders_every_page_without_a_warning(pages: dict[str, str],
                                                    tmp_path: Path) -> None:
    groff = require_tool("groff")
    for name, text in pages.items():
        src = tmp_path / name
        src.write_text(text)
        r = subprocess.run([groff, "-ww", "-man", "-Tutf8", "-z", str(src)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        shown = subprocess.run(["man", "-l", str(src)], capture_output=True, text=True,
                               timeout=60, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
        assert shown.returncode == 0 and "EXAMPLES" in shown.stdout, (name, shown.stderr)


def test_man_directory_is_up_to_date(pages: dict[str, str]) -> None:
    committed = {p.name: p.read_text() for p in sorted((ROOT / "man").glob("*.1"))}
    stale = sorted(n for n in set(pages) | set(committed) if pages.get(n) != committed.get(n))
    assert not stale, f"man/ is stale ({', '.join(stale)}): run `make man`"
