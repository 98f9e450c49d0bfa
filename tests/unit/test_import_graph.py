"""The imaging and inventory packages import one another without cycles (issue 15):
every import counts, also those inside functions or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "provision"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str) -> set[str]:
    """The modules of ``provision`` that the file at ``path`` imports, anywhere in it."""
    pkg = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.startswith(package + ".")}
    return out


@pytest.mark.parametrize("package", ["provision.imaging", "provision.inventory"])
def test_no_import_cycle(package: str) -> None:
    folder = ROOT / package.split(".", 1)[1]
    files = {_module(p): p for p in folder.rglob("*.py")}
    graph = {m: {n for n in _imports(p, package) if n in files and n != m}
             for m, p in files.items()}
    # a package's __init__ importing its own modules is not a cycle with them
    for m in graph:
        graph[m] = {n for n in graph[m] if not m.startswith(n + ".")}
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, stack + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_every_module_of_provision_lab_bench_and_support_imports() -> None:
    """A moved module leaves no importer behind (bench/ and the lab are not type-checked
    by the test run, and a stale import inside a function fails only when it runs)."""
    import importlib
    import pkgutil

    import bench
    import lab
    import provision
    import tests.support

    failed = []
    for pkg in (provision, lab, bench, tests.support):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if m.name == "provision.__main__":
                continue
            try:
                importlib.import_module(m.name)
            except Exception as e:  # noqa: BLE001 - every failure listed at once
                failed.append(f"{m.name}: {e!r}")
    assert not failed, failed


def test_no_relative_import_of_a_module_that_is_not_there() -> None:
    """``from .x import y`` inside a function of a test or lab module names a sibling
    that exists (the tiers moved every shared helper to tests/support or lab/)."""
    import re

    root = ROOT.parent
    bad = []
    for d in ("tests", "lab", "bench"):
        for p in (root / d).rglob("*.py"):
            for n, line in enumerate(p.read_text().splitlines(), 1):
                m = re.match(r"\s+from \.(\w+) import", line)
                if m and not (p.parent / f"{m.group(1)}.py").exists() \
                        and not (p.parent / m.group(1)).is_dir():
                    bad.append(f"{p.relative_to(root)}:{n}: {line.strip()}")
    assert not bad, bad
