"""The IPv6 lab inventory with a netboot6 host and the master's IPv6 address
(test_ipv6_netboot, test_ipv6_netboot_lab)."""

from __future__ import annotations

from tests.support.ipv6_support import INVENTORY as BASE

MASTER6 = "2001:db8:18::1"


INVENTORY = BASE.replace(
    "  masters: {primary: m01}\n",
    f'  masters: {{primary: m01}}\n  master_address6: "{MASTER6}"\n', 1).replace(
    '       addresses6: {lan: "2001:db8:18::11"}}\n',
    '       addresses6: {lan: "2001:db8:18::11"}, netboot6: true}\n', 1)
