"""Stand-ins for the renderer in the boot tree tests (test_boottree, test_boottree_holes)."""

from __future__ import annotations


def fake_render(inv, host, what):
    return f"{what} for {host.name} mac={host.macs[0]}\n"


def fake_default(inv):
    return "DEFAULT menu\n"
