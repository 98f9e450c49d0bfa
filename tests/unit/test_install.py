"""`make install DESTDIR=...` stages a working install: the virtualenv with dsas's
commands, the links, a unit that `systemd-analyze verify` accepts, the example
inventory only when there is none, the state directory and the boot root with the
loaders; `make uninstall` takes it away again and keeps the configuration and state.

pip fetches dsas's dependencies as `make deps` does (from its cache when it can)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab.testing import require_tool
from tests.support.paths import ROOT

UNIT = "etc/systemd/system/dsas-serve.service"


def _make(target: str, dest: Path) -> None:
    out = subprocess.run(["make", "-C", str(ROOT), target, f"DESTDIR={dest}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"make {target}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"


def test_make_install_into_destdir_then_uninstall(tmp_path: Path) -> None:
    require_tool("make")
    analyze = require_tool("systemd-analyze")
    dest = tmp_path / "root"
    (dest / "etc/dsas").mkdir(parents=True)
    (dest / "etc/dsas/cluster.yaml").write_text("# the operator's own\n")
    _make("install", dest)

    venv = dest / "opt/dsas"
    for cmd in ("dsas", "dsas-push", "dsas-clone"):
        link = dest / "usr/local/bin" / cmd
        assert os.readlink(link) == f"/opt/dsas/bin/{cmd}"  # the final path, not DESTDIR's
        script = (venv / "bin" / cmd).read_text()
        assert script.startswith("#!/opt/dsas/bin/python"), script[:80]
    version = subprocess.run([str(venv / "bin/python"), "-m", "provision", "--version"],
                             capture_output=True, text=True, timeout=60, check=True,
                             cwd=tmp_path).stdout
    assert version.startswith("dsas, version")
    recipes = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "from provision.imaging.build import default_recipes_dir as d; print(d())"],
        capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path).stdout.strip()
    assert recipes == f"{venv}/share/dsas/images"  # not the checkout's: it is not there
    assert (venv / "share/dsas/images/netboot/recipe.toml").is_file()
    assert (venv / "share/dsas/boot-scripts/dsas-init").is_file()

    assert (dest / "etc/dsas/cluster.yaml").read_text() == "# the operator's own\n"
    assert (dest / "etc/default/dsas").is_file()
    assert (dest / "var/lib/dsas").is_dir()
    boot = dest / "srv/dsas/boot"
    for loader in ("undionly.kpxe", "ipxe.efi", "pxelinux.0", "ldlinux.c32"):
        assert (boot / loader).is_file(), loader
    assert (dest / "usr/local/share/man/man1/dsas.1").is_file()

    unit = (dest / UNIT).read_text()
    assert "ExecStart=/opt/dsas/bin/dsas serve --state-dir /var/lib/dsas --boot-root " \
           "/srv/dsas/boot" in unit
    # systemd-analyze checks the unit's syntax and that ExecStart is executable: point
    # it at the staged tree (the real path exists only after a real install).
    staged = tmp_path / "dsas-serve.service"
    staged.write_text(unit.replace("/opt/dsas/", f"{venv}/"))
    out = subprocess.run([analyze, "verify", "--man=no", str(staged)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "dsas-serve" not in out.stderr, out.stderr

    (boot / "images/web/v1").mkdir(parents=True)  # an operator's image: uninstall keeps it
    _make("uninstall", dest)
    assert not (dest / "opt/dsas").exists()
    assert not (dest / UNIT).exists()
    assert not any((dest / "usr/local/bin").iterdir())
    assert not (boot / "undionly.kpxe").exists()
    assert [p.name for p in boot.iterdir()] == ["images"]
    assert (dest / "etc/dsas/cluster.yaml").read_text() == "# the operator's own\n"
    assert (dest / "etc/default/dsas").is_file() and (dest / "var/lib/dsas").is_dir()
