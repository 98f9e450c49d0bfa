"""Where things are: the repository root, the example inventory, the fixtures."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parents[1]
EXAMPLE = ROOT / "etc" / "dsas" / "cluster.yaml"
FIXTURES = ROOT / "tests" / "fixtures"
