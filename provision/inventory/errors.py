"""Inventory errors: every problem names the file, the line and key path, and the reason."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DsasError


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the inventory, at its file and line."""

    file: str
    line: int | None  # 1-based, None when unknown
    key: str  # dotted key path, e.g. hosts.w101.macs[1]
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class InventoryError(DsasError):
    """The inventory could not be loaded; carries every problem found."""

    exit_code = 1

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.key, p.reason))
        super().__init__("\n".join(str(p) for p in self.problems))
