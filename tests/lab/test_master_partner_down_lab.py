"""Partner-down (issue 18, ISC failover) between real processes: with
``auto_partner_down`` the secondary, alone after the primary was killed, takes the whole
pool once MCLT has passed: six new machines on a /28 where its half has five addresses
all get one, the sixth from the primary's half, and no address is given twice."""

from __future__ import annotations

import pytest

from lab.testing import wait_for
from tests.support.master_lab import Pair, no_address_twice, start_client, up

PRIMARY_HALF = {"198.18.0.4", "198.18.0.5", "198.18.0.6", "198.18.0.7"}
SECONDARY_HALF = {"198.18.0.8", "198.18.0.9", "198.18.0.10", "198.18.0.12", "198.18.0.13"}


@pytest.mark.parametrize("pair_lab", ["partner_down"], indirect=True)
def test_alone_for_mclt_the_survivor_takes_the_whole_pool(pair_lab: Pair) -> None:
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    up(p)
    m1.kill()
    wait_for(m2.holds_vip, 20, "the secondary to take the VIP")
    wait_for(lambda: m2.status().get("role") == "active", 10, "the secondary active")
    clients = [p.client() for _ in range(6)]
    for c in clients:
        start_client(c, wait=False)
    wait_for(lambda: all(c.address() for c in clients), 90,
             "all six machines to get an address (five in m02's half, then partner-down)")
    got = {c.mac: c.address() for c in clients}
    assert set(got.values()) <= PRIMARY_HALF | SECONDARY_HALF, got
    assert set(got.values()) & PRIMARY_HALF, f"none from the primary's half: {got}"
    assert "auto_partner_down: the whole pool" in m2.log(), m2.log()[-3000:]
    no_address_twice(p)
