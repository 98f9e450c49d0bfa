"""Partner-down (issue 18, ISC failover): a master of a pair alone gives new addresses
only from its half and leases of at most MCLT; with ``whole_after`` (auto_partner_down:
the peer is taken to be down) the whole pool is its own once that time has passed, but
an address another machine held still waits MCLT after its end."""

from __future__ import annotations

from ipaddress import IPv4Address

from provision.policy.dhcp import DhcpPolicy, DhcpSettings
from provision.policy.leases import LeaseTable
from provision.protocol import dhcp_options as o
from tests.support.dhcp_policy_support import INV, T0, run

MCLT = 60.0
PEER_HALF = "198.18.0.250"  # the secondary's half of lan's pool
HELD = "198.18.0.240"  # also the secondary's half


def _alone(whole_after: float | None) -> DhcpPolicy:
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True, new_mac_rate=0))
    p.me = "primary"
    p.table.bind("lan", "52:54:00:00:0e:01", int(IPv4Address(HELD)), T0 - 10)  # ended
    p.interrupted("primary", MCLT, whole_after)
    return p


def _offer(p: DhcpPolicy, mac: str, now: float, hint: str) -> str | None:
    d = run(p, o.DISCOVER, mac, now=now, requested=hint)
    return str(d.reply.yiaddr) if d.reply is not None else None


def test_alone_without_partner_down_the_peer_half_stays_the_peers() -> None:
    p = _alone(None)
    got = _offer(p, "52:54:00:00:0f:01", T0 + 10 * MCLT, PEER_HALF)
    assert got is not None and got != PEER_HALF and int(got.rsplit(".", 1)[1]) <= 127


def test_in_partner_down_the_whole_pool_is_ours_after_whole_after_but_not_before() -> None:
    p = _alone(T0 + MCLT)
    early = _offer(p, "52:54:00:00:0f:02", T0 + 1, PEER_HALF)
    assert early is not None and early != PEER_HALF  # before: own half only
    assert _offer(p, "52:54:00:00:0f:03", T0 + MCLT, PEER_HALF) == PEER_HALF
    # another machine's address, ended 10 s before T0: not before MCLT after its end
    assert _offer(p, "52:54:00:00:0f:04", T0 + MCLT - 11, HELD) != HELD
    assert _offer(p, "52:54:00:00:0f:05", T0 + MCLT, HELD) == HELD


def test_alone_a_new_lease_lasts_at_most_mclt() -> None:
    p = _alone(None)
    mac = "52:54:00:00:0f:06"
    ip = _offer(p, mac, T0, "198.18.0.50")
    assert ip is not None
    d = run(p, o.REQUEST, mac, now=T0, requested=ip, server="198.18.0.1")
    assert d.reply is not None and d.reply.yiaddr == IPv4Address(ip)
    assert int.from_bytes(d.reply.options[o.LEASE_TIME], "big") == int(MCLT)
    lease = p.table.of("lan", mac)
    assert lease is not None and lease.expires == T0 + MCLT
