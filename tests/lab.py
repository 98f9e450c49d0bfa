"""The lab for tests: provision.lab's namespaces plus pytest-style tool checks.

A missing tool or missing root privileges FAIL the test with the tool's name
(never a silent skip).
"""

from __future__ import annotations

import os

import pytest

from provision.lab.netns import (  # noqa: F401 - re-exported for the tests
    LAB_NET,
    TOOL_PACKAGES,
    LabError,
    Netns,
    check_lab_address,
    find_tool,
)
from provision.lab.netns import Lab as _Lab


def require_tool(name: str) -> str:
    """Path of a tool the test needs; fails the test (never skips) naming it."""
    path = find_tool(name)
    if path is None:
        pkg = TOOL_PACKAGES.get(name, "?")
        pytest.fail(f"missing tool {name!r} (Debian package {pkg}); run `make deps`",
                    pytrace=False)
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces)", pytrace=False)


class Lab(_Lab):
    def __enter__(self) -> Lab:
        require_root()
        require_tool("ip")
        return self
