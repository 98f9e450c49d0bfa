"""The CLI, through click's CliRunner: output, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli.main import cli
from tests.support.paths import EXAMPLE, FIXTURES, ROOT


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_check_clean_inventory() -> None:
    code, out, err = run("check", "-i", str(EXAMPLE))
    assert code == 0 and err == ""
    assert "ok: cluster example" in out and "17 hosts" in out


def test_check_lists_every_problem_and_exits_1() -> None:
    code, out, err = run("check", "-i", str(FIXTURES / "bad" / "duplicate-mac.yaml"))
    assert code == 1 and out == ""
    assert "duplicate-mac.yaml:" in err and "hosts.w2.macs[0]" in err
    assert err.strip().endswith("1 problem found")
    assert "Traceback" not in err


def test_check_uses_environment_variable(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DSAS_INVENTORY", str(FIXTURES / "small.yaml"))
    code, out, _ = run("check")
    assert code == 0 and "cluster lab" in out


def test_hosts_table() -> None:
    code, out, _ = run("hosts", "-i", str(EXAMPLE), "--role", "lvs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "ROLE", "MACS", "ADDRESSES", "HWTYPE", "BOOT", "IMAGE"]
    assert [line.split()[0] for line in lines[2:]] == ["lvs1", "lvs2"]
    assert "bond0.2=203.0.113.11/24" in out
    code, _, err = run("hosts", "-i", str(EXAMPLE), "--role", "nope")
    assert code == 2 and "unknown role" in err


def test_render_one_file_and_errors() -> None:
    code, out, _ = run("render", "-i", str(EXAMPLE), "w103", "--what", "ipxe")
    assert code == 0 and out.startswith("#!ipxe") and "dsas.host=w103" in out
    code, out, _ = run("render", "-i", str(EXAMPLE), "--what", "zone")
    assert code == 0 and "w103.farm.example.\t300\tIN\tA\t198.18.1.3" in out
    code, _, err = run("render", "-i", str(EXAMPLE), "nosuch")
    assert code == 1 and err.strip() == "error: unknown host 'nosuch'"
    code, _, err = run("render", "-i", str(EXAMPLE), "w101", "--what", "keepalived")
    assert code == 1 and "not in an LVS pair" in err


@pytest.mark.parametrize("inventory", [EXAMPLE, FIXTURES / "dns-ipv6.yaml"],
                         ids=["example", "dns-ipv6"])
def test_render_zone_and_dns_zone_print_the_same_zone(inventory: Path) -> None:
    """One DNS model: `dsas render --what zone` shows what `dsas dns zone` (the server) holds."""
    code, rendered, err = run("render", "-i", str(inventory), "--what", "zone")
    assert code == 0, err
    code, served, err = run("dns", "zone", "-i", str(inventory))
    assert code == 0, err
    assert rendered == served
    assert "\tIN\tSOA\t" in served and "\tIN\tPTR\t" in served


def test_render_all_writes_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text, _ = run("render", "-i", str(EXAMPLE), "--all", "--out", str(out))
    assert code == 0 and "for 17 hosts" in text
    (out / "stale").write_text("old run")  # in a directory dsas rendered: replaced
    code, text, _ = run("render", "-i", str(EXAMPLE), "--all", "--out", str(out))
    assert code == 0 and "for 17 hosts" in text
    assert not (out / "stale").exists()
    assert (out / "w101" / "dsas.conf").read_text().count("SYSTEMNAME=w101") == 1
    assert (out / "lvs2" / "keepalived.conf").exists()
    assert not (out / "w101" / "keepalived.conf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary leftovers


def test_render_all_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, text, err = run("render", "-i", str(EXAMPLE), "--all", "--out", str(out))
    assert code == 1 and text == ""
    assert "not empty and dsas did not render it" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir()] == ["home"]  # no temporary leftovers
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, _ = run("render", "-i", str(EXAMPLE), "--all", "--out", str(empty))
    assert code == 0 and (empty / "w101" / "dsas.conf").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run("render", "-i", str(EXAMPLE), "--all", "--out", str(afile))
    assert code == 2 and "is a file" in err and afile.read_text() == "x"  # click refuses


def test_push_and_clone_without_arguments_are_usage_errors() -> None:
    for script in ("dsas-push", "dsas-clone"):
        exe = ROOT / ".venv" / "bin" / script
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (script, r.returncode, r.stderr)
        assert f"Usage: {script} " in r.stderr and f"{script} --help" in r.stderr, r.stderr


def test_help_explains() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "DSAS_INVENTORY" in out
    for cmd in ("check", "hosts", "render", "serve"):
        assert cmd in out
    code, out, _ = run("serve", "--help")
    assert code == 0 and "--proxy" in out and "SIGHUP" in out


def test_demo_offline_renders_the_example(tmp_path: Path) -> None:
    code, out, _ = run("demo", "--offline", "--workdir", str(tmp_path))
    assert code == 0 and "17 hosts" in out and "lvs1" in out
    assert (tmp_path / "rendered" / "lvs1" / "keepalived.conf").exists()


def test_demo_help_explains_the_lab() -> None:
    code, out, _ = run("demo", "--help")
    assert code == 0 and "PXE-boot" in out and "Ctrl-C" in out and "--offline" in out
