"""Each CLI entry point turns a DsasError raised deep inside into one line on stderr
and that error's exit code (provision/cli/common.py: OneLineErrors)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from provision.cli import common
from provision.cli.clone import cli as clone_cli
from provision.cli.main import cli as dsas_cli
from provision.cli.push import push_cmd
from provision.errors import DsasError
from tests.support.paths import EXAMPLE


class Deep(DsasError):
    exit_code = 7


def _raise_deep(path: object) -> None:
    raise Deep("the disk is on fire\n  (second line of the reason)")


def _invoke(cmd: click.Command, args: list[str], monkeypatch: pytest.MonkeyPatch
            ) -> tuple[int, str]:
    monkeypatch.setattr(common, "load", _raise_deep)  # below load_inventory: the loader
    r = CliRunner().invoke(cmd, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stderr


def _one_line(err: str) -> None:
    assert err == "error: the disk is on fire; (second line of the reason)\n"


def test_dsas(monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _invoke(dsas_cli, ["hosts", "-i", str(EXAMPLE)], monkeypatch)
    assert code == 7
    _one_line(err)


def test_dsas_push(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, err = _invoke(push_cmd, ["--status", "--all", "-i", str(EXAMPLE),
                                   "--state-dir", str(tmp_path)], monkeypatch)
    assert code == 7
    _one_line(err)


def test_dsas_clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, err = _invoke(clone_cli, ["w101", "--target", str(tmp_path / "disk.img"),
                                    "-i", str(EXAMPLE)], monkeypatch)
    assert code == 7
    _one_line(err)


def test_command_error_from_a_real_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing program deep inside: its one line, exit 1."""
    from provision import proc

    def load(path: object) -> None:
        proc.run(["sh", "-c", "echo boom >&2; exit 3"], timeout=10)

    monkeypatch.setattr(common, "load", load)
    r = CliRunner().invoke(dsas_cli, ["check", "-i", str(EXAMPLE)])
    assert (r.exit_code, r.stderr) == (1, "error: `sh -c 'echo boom >&2; exit 3'` exited 3: boom\n")
