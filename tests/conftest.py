"""Shared fixtures: the lab (namespaces), the example inventory, a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.testing import Lab
from provision.inventory import Inventory, load
from tests.support.paths import EXAMPLE

# Fixtures several test files use, defined with their helpers in tests/support/:
# served (a DHCP service on a veth pair), net (the DNS lab), machine (a fake node root).
pytest_plugins = ("tests.support.dhcp_served", "tests.support.dns_lab",
                  "tests.support.dsas_init_support")


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

    lines = [line for name in ("tests.vm.test_netboot_lab", "tests.vm.test_firmware_lab")
             for line in getattr(sys.modules.get(name), "TIMINGS", [])]
    if lines:
        terminalreporter.section("lab timings")
        for line in lines:
            terminalreporter.write_line(line)
