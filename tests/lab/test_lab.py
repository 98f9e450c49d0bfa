"""The lab itself: namespaces talk over veths and bridges, and are cleaned up."""

import subprocess

import pytest

from lab.testing import Lab, check_lab_address


def test_veth_and_bridge_carry_traffic(lab: Lab) -> None:
    a, b, sw = lab.netns("a"), lab.netns("b"), lab.netns("sw")
    lab.bridge(sw, "br0")
    lab.plug(sw, "br0", a, "198.18.200.1/24")
    lab.plug(sw, "br0", b, "198.18.200.2/24")
    out = a.run(["ping", "-c", "1", "-W", "2", "198.18.200.2"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_close_removes_namespaces_and_processes() -> None:
    with Lab() as lab:
        ns = lab.netns("gone")
        proc = ns.popen(["sleep", "60"])
        name = ns.name
    assert proc.poll() is not None
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listing


def test_addresses_outside_the_lab_range_are_refused() -> None:
    with pytest.raises(ValueError):
        check_lab_address("192.0.2.1/24")
    check_lab_address("198.19.255.1/24")
