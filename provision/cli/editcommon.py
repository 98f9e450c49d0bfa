"""What the inventory-editing commands share: read, edit, validate, commit, tell serve."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..inventory import Inventory, InventoryError, loads, resolve_path
from ..inventory.commit import CommitError, Snapshot, commit, read
from ..inventory.edit import Document, EditError
from ..services.servepid import notify_serve
from ..state.inventory import sha256

STATE_ENV = "DSAS_STATE_DIR"
DEFAULT_STATE_DIR = "/var/lib/dsas"

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False), envvar=STATE_ENV,
    default=DEFAULT_STATE_DIR, show_default=True,
    help=f"State directory: the inventory history, and the running `dsas serve` to "
         f"reload (its serve.pid); also ${STATE_ENV}.")


NOTHING = "nothing written:"


def fail_problems(head: str, problems: list[str], code: int = 1) -> None:
    """One line for one problem (``error: <problem> (nothing written)``), else a head line
    and one line per problem; then exit ``code``."""
    if len(problems) == 1 and head == NOTHING:
        click.echo(f"error: {problems[0]} (nothing written)", err=True)
    else:
        click.echo(f"error: {head}", err=True)
        for p in problems:
            click.echo(f"error: {p}", err=True)
    sys.exit(code)


@dataclass
class Edit:
    """One inventory edit in progress: the file, its snapshot and the edited text."""

    path: Path
    snap: Snapshot
    doc: Document | None  # None for a revert: the bytes come from the history
    new_text: str = ""
    inventory: Inventory | None = None  # new_text, loaded (validated) once
    inventory_of: str | None = None


def start(inventory_path: str | None) -> Edit:
    path = resolve_path(inventory_path)
    snap = read(path)  # a CommitError: one line, from the command's OneLineErrors
    try:
        return Edit(path, snap, Document(snap.text, str(path)))
    except EditError as e:
        fail_problems("cannot edit the inventory", e.problems)
    raise AssertionError("unreachable")


def apply(edit: Edit, fn: Callable[[Document], Any]) -> Any:
    """Run the edit on the tree; every reason it cannot be made, at once."""
    assert edit.doc is not None
    try:
        out = fn(edit.doc)
    except EditError as e:
        fail_problems(NOTHING, e.problems)
    edit.new_text = edit.doc.text()
    return out


def validated(edit: Edit) -> Inventory:
    """The would-be inventory, loaded by the real loader; on any problem, all of them and
    exit 1 (the file untouched)."""
    if edit.inventory is not None and edit.inventory_of == edit.new_text:
        return edit.inventory
    try:
        edit.inventory = loads(edit.new_text, str(edit.path))
        edit.inventory_of = edit.new_text
        return edit.inventory
    except InventoryError as e:
        n = len(e.problems)
        fail_problems(f"the edit would leave {edit.path} invalid ({n} problem"
                      f"{'s' if n != 1 else ''}; lines are of the edited text); nothing "
                      "written:", [str(p) for p in e.problems])
    raise AssertionError("unreachable")


def file_diff(edit: Edit) -> str:
    return "".join(difflib.unified_diff(
        edit.snap.text.splitlines(keepends=True), edit.new_text.splitlines(keepends=True),
        fromfile=f"{edit.path} (before)", tofile=f"{edit.path} (after)", n=0))


def finish(edit: Edit, command: str, state_dir: str, quiet_diff: bool = False,
           on_error: Callable[[str], None] | None = None) -> int | None:
    """Commit and tell the running serve. Returns the new revision (None: no change).
    ``on_error`` hears why, before the command exits, when the commit is refused."""
    validated(edit)
    if not quiet_diff:
        click.echo(file_diff(edit), nl=False)
    try:
        rev = commit(edit.path, edit.snap, edit.new_text, command, state_dir,
                     validated=edit.inventory_of == edit.new_text)
    except InventoryError as e:  # validate() again inside commit: cannot differ, but be safe
        if on_error:
            on_error(f"invalid: {e.problems[0]}")
        fail_problems(NOTHING, [str(p) for p in e.problems])
    except CommitError as e:
        if on_error:
            on_error(str(e))
        fail_problems(str(e), [], e.exit_code)
    if rev is None:
        click.echo(f"{edit.path}: no change")
        return None
    click.echo(f"{edit.path}: written (revision {rev}; `dsas inventory log` lists them, "
               f"`dsas inventory revert` undoes this one)")
    notice = notify_serve(state_dir, edit.path, sha256(edit.new_text.encode()))
    click.echo(notice.message, err=not notice.reloaded and notice.pid is not None)
    return rev
