"""`dsas inventory log|diff|revert`: the versions of the inventory that edits kept."""

from __future__ import annotations

import difflib
import time
from pathlib import Path

import click

from ..inventory import resolve_path
from ..inventory.commit import read
from ..state import FILENAME, StateStore
from ..state.inventory import InventoryHistory, Revision, sha256
from .common import inventory_option, table
from .editcommon import Edit, fail_problems, finish, state_dir_option


@click.group("inventory")
def inventory_group() -> None:
    """The inventory's history: every version an edit wrote or replaced.

    \b
    Examples:
      dsas inventory log
      dsas inventory diff          # what the last edit changed
      dsas inventory diff 3        # revision 3 -> the file now
      dsas inventory revert        # undo the last edit (byte for byte)
      dsas inventory revert 3      # put revision 3 back
    """


def _history(inventory_path: str | None, state_dir: str) -> tuple[Path, list[Revision]]:
    path = resolve_path(inventory_path)
    if not (Path(state_dir) / FILENAME).exists():
        return path, []
    store = StateStore(state_dir)
    try:
        return path, InventoryHistory(store).revisions(path)
    finally:
        store.close()


def _current(path: Path) -> bytes:
    return read(path).data


def _current_rev(revs: list[Revision], data: bytes) -> Revision | None:
    sha = sha256(data)
    return next((r for r in reversed(revs) if r.sha256 == sha), None)


def _previous(revs: list[Revision], data: bytes) -> Revision | None:
    """The revision before the one the file is now (the file as the last edit found it)."""
    cur = _current_rev(revs, data)
    if cur is None:
        return revs[-1] if revs else None
    before = [r for r in revs if r.rev < cur.rev and r.sha256 != cur.sha256]
    return before[-1] if before else None


def _pick(revs: list[Revision], data: bytes, rev: int | None, path: Path) -> Revision:
    if not revs:
        fail_problems(f"no history for {path} (no edit was made with dsas, or another "
                      "--state-dir)", [])
    if rev is None:
        r = _previous(revs, data)
        if r is None:
            fail_problems(f"{path} is its first revision: nothing before it", [])
    else:
        r = next((x for x in revs if x.rev == rev), None)
        if r is None:
            fail_problems(f"no revision {rev} of {path} (revisions: "
                          f"{revs[0].rev}..{revs[-1].rev})", [], 2)
    assert r is not None
    return r


def _changes(a: bytes, b: bytes) -> str:
    plus = minus = 0
    for ln in difflib.unified_diff(a.decode().splitlines(), b.decode().splitlines(),
                                   lineterm="", n=0):
        if ln.startswith("+") and not ln.startswith("+++"):
            plus += 1
        elif ln.startswith("-") and not ln.startswith("---"):
            minus += 1
    return f"+{plus} -{minus}"


@inventory_group.command("log")
@inventory_option
@state_dir_option
def log(inventory_path: str | None, state_dir: str) -> None:
    """List the revisions, oldest first; * marks the one the file is now."""
    path, revs = _history(inventory_path, state_dir)
    if not revs:
        click.echo(f"no history for {path}")
        return
    data = _current(path)
    cur = _current_rev(revs, data)
    rows = []
    prev = b""
    for r in revs:
        mark = "*" if cur is not None and r.rev == cur.rev else ""
        rows.append([f"{r.rev}{mark}", time.strftime("%Y-%m-%d %H:%M:%S",
                                                     time.localtime(r.at)),
                     r.user, r.sha256[:12], _changes(prev, r.content) if prev else "",
                     r.command])
        prev = r.content
    click.echo(table(["REV", "WHEN", "USER", "SHA256", "LINES", "COMMAND"], rows))
    if cur is None:
        click.echo(f"note: {path} is none of these (changed by hand since the last edit)")


@inventory_group.command("diff")
@inventory_option
@state_dir_option
@click.argument("rev", type=int, required=False)
def diff(inventory_path: str | None, state_dir: str, rev: int | None) -> None:
    """Show the change from revision REV to the file now (default: the last edit's)."""
    path, revs = _history(inventory_path, state_dir)
    data = _current(path)
    r = _pick(revs, data, rev, path)
    click.echo("".join(difflib.unified_diff(
        r.content.decode().splitlines(keepends=True), data.decode().splitlines(keepends=True),
        fromfile=f"{path} (revision {r.rev})", tofile=f"{path} (now)")), nl=False)


@inventory_group.command("revert")
@inventory_option
@state_dir_option
@click.argument("rev", type=int, required=False)
def revert(inventory_path: str | None, state_dir: str, rev: int | None) -> None:
    """Put revision REV back byte for byte (default: undo the last edit).

    The revert is an edit like any other: validated, locked, refused if the file
    changed since it was read, recorded in the history, reloaded by `dsas serve`.
    """
    path, revs = _history(inventory_path, state_dir)
    snap = read(path) if path.exists() else None
    if snap is None:
        fail_problems(f"{path}: no such file", [])
    assert snap is not None
    r = _pick(revs, snap.data, rev, path)
    edit = Edit(path, snap, None, r.content.decode())
    finish(edit, f"inventory revert {r.rev}", state_dir)
