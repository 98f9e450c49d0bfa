"""The lab for tests: lab.netns's namespaces plus pytest-style tool checks.

A missing tool or missing root privileges FAIL the test with the tool's name
(never a silent skip).
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from .netns import (  # noqa: F401 - re-exported for the tests
    LAB_NET,
    TOOL_PACKAGES,
    LabError,
    Netns,
    check_lab_address,
    find_tool,
)
from .netns import Lab as _Lab

T = TypeVar("T")


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
    """The lab for tests: fails, naming the tool, when root or a tool is missing."""

    def __enter__(self) -> Lab:
        require_root()
        require_tool("ip")
        return self


def wait_for(pred: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll ``pred`` until it returns something true (returned), at most ``timeout`` s;
    then fail the test naming ``what``. For waiting on an event, never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def read_until(proc: subprocess.Popen[Any], pred: Callable[[str], bool], timeout: float,
               what: str) -> str:
    """Read ``proc``'s stdout pipe until ``pred`` holds for what was read (returned), at
    most ``timeout`` s. Reads the file descriptor itself, so a later
    ``proc.communicate()`` returns the rest."""
    assert proc.stdout is not None
    fd, text = proc.stdout.fileno(), ""
    deadline = time.monotonic() + timeout
    while not pred(text):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"timed out after {timeout} s waiting for {what}: {text[-500:]!r}",
                        pytrace=False)
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"{what}: the process closed its output: {text[-500:]!r}",
                        pytrace=False)
        text += chunk.decode(errors="replace")
    return text
