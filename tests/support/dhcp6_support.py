"""DHCPv6: the IPv6 lab inventory loaded, a link, DUIDs, a message builder and mutated
messages (test_dhcp6, test_dhcp6_policy_unit, test_dhcp6_lab)."""

from __future__ import annotations

import random
from ipaddress import IPv6Address

from provision.inventory import loads
from provision.policy.dhcp6 import Link6
from provision.protocol import dhcp6 as d6
from tests.support.ipv6_support import INVENTORY

W1_MAC = "52:54:00:00:01:01"


W2_MAC = "52:54:00:00:01:02"


SERVER_DUID = d6.duid_ll("52:54:00:aa:00:01")


INV = loads(INVENTORY, "lab.yaml")


LINK = Link6("br0", INV.networks["lan"], IPv6Address("2001:db8:18::1"), SERVER_DUID)


W1_LL = IPv6Address("fe80::5054:ff:fe00:101")  # EUI-64 of W1_MAC


def message(mtype: int, duid: bytes | None, *extra: tuple[int, bytes],
            ia: bool = True) -> d6.Dhcp6Message:
    opts: list[tuple[int, bytes]] = []
    if duid is not None:
        opts.append((d6.CLIENTID, duid))
    if ia:
        opts.append((d6.IA_NA, d6.ia_na(b"\x00\x00\x00\x07", 0, 0, [])))
    opts += list(extra)
    return d6.decode(d6.encode(d6.Dhcp6Message(mtype, b"\x12\x34\x56", opts)))


def mutated(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


SEEDS = [d6.encode(message(t, d6.duid_ll(W1_MAC), (d6.CLIENT_ARCH_TYPE, b"\x00\x07"),
                           (d6.USER_CLASS, b"\x00\x04iPXE"), (d6.SERVERID, SERVER_DUID)))
         for t in (d6.SOLICIT, d6.REQUEST, d6.CONFIRM, d6.RENEW, d6.INFORMATION_REQUEST)]
