"""Shared fixtures (the lab's namespaces, the example inventory) and the tiers.

The folder says what a test needs, and sets its markers (never a per-file pytestmark):

    tests/unit/   pure: no root, no namespaces, no real daemons     (no marker)
    tests/lab/    network namespaces, real clients and daemons       lab
    tests/vm/     QEMU guests (in namespaces too)                    lab, vm

so ``pytest -m "not lab"`` (or ``pytest tests/unit``) runs without root, and
``-m "not vm"`` leaves out the slow guests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import Lab
from provision.inventory import Inventory, load
from tests.support.paths import EXAMPLE

# Fixtures several test files use, defined with their helpers in tests/support/:
# served (a DHCP service on a veth pair), net (the DNS lab), machine (a fake node root),
# pair_lab (two master namespaces running `dsas serve --master`).
pytest_plugins = ("tests.support.dhcp_served", "tests.support.dns_lab",
                  "tests.support.dsas_init_support", "tests.support.master_lab")


TIERS = {"lab": ("lab",), "vm": ("lab", "vm")}  # folder under tests/ -> markers
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = item.path.resolve().relative_to(HERE)
        except ValueError:  # not under tests/
            continue
        for marker in TIERS.get(rel.parts[0], ()):
            item.add_marker(marker)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="session")
def example() -> Inventory:
    return load(EXAMPLE)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Print the figures lab tests measured (boot seconds), never as asserts."""
    import sys

    lines = [line for name in ("tests.vm.test_netboot_lab", "tests.vm.test_firmware_lab",
                               "tests.vm.test_master_pair_vm")
             for line in getattr(sys.modules.get(name), "TIMINGS", [])]
    if lines:
        terminalreporter.section("lab timings")
        for line in lines:
            terminalreporter.write_line(line)
