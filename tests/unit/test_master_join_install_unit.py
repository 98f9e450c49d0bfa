"""The installation `dsas master join` copies (provision.ha.install): found, packed."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from provision.ha import install as hi
from provision.ha.join import JoinError


def _tree(tmp_path: Path) -> hi.Installation:
    p = tmp_path / "opt" / "dsas"
    (p / "bin").mkdir(parents=True)
    (p / "share" / "dsas").mkdir(parents=True)
    (p / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")
    (p / "bin" / "dsas").write_text("#!/bin/sh\necho 'dsas, version 1'\n")
    (p / "bin" / "python3").symlink_to("/usr/bin/python3")
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "dsas-serve.service").write_text("[Service]\n")
    return hi.Installation(p, bindir=tmp_path / "bin", mandir=tmp_path / "man",
                           unitdir=tmp_path / "unit")


def test_a_dev_venv_is_not_an_installation(tmp_path: Path) -> None:
    # the tests run from a development venv (pip install -e), not `make install`'s
    with pytest.raises(JoinError, match=r"is not an installed dsas .*no share/dsas there "
                                        r"\(give --install-from PREFIX, or --no-install\)"):
        hi.Installation.find(None)
    (tmp_path / "pyvenv.cfg").write_text("version = 3.11.2\n")
    with pytest.raises(JoinError, match="no bin/dsas there$"):
        hi.Installation.find(str(tmp_path))


def test_the_python_version_is_the_venvs(tmp_path: Path) -> None:
    assert _tree(tmp_path).python_version() == "3.11"


def test_the_pack_holds_the_tree_the_extras_and_a_manifest_of_every_file(
        tmp_path: Path) -> None:
    inst = _tree(tmp_path)
    out = io.BytesIO()
    sha = hi.pack(inst, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
        manifest = tar.extractfile("MANIFEST").read()  # type: ignore[union-attr]
        assert tar.getmember("prefix/bin/python3").issym()
    assert hashlib.sha256(manifest).hexdigest() == sha
    unit = f"files{tmp_path}/unit/dsas-serve.service"
    assert {"prefix", "prefix/pyvenv.cfg", "prefix/bin/dsas", unit} <= set(names)
    sums = dict(reversed(line.split("  ", 1)) for line in manifest.decode().splitlines())
    assert set(sums) == {"prefix/pyvenv.cfg", "prefix/bin/dsas", unit}
    assert sums["prefix/bin/dsas"] == hashlib.sha256(
        (inst.prefix / "bin" / "dsas").read_bytes()).hexdigest()
