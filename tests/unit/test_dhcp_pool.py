"""The discovery pool: exclusions, cursor wrap, offer hold, DECLINE, restart fidelity.

Tests written against the mutants that survived the older tests (issue 24): each
checks one thing the pool or the lease table exists for, on a network small enough
that every address can be named.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from provision.inventory import loads
from provision.policy import dhcp as policy_dhcp
from provision.policy.dhcp import TO_BROADCAST, Decision, DhcpPolicy, DhcpSettings, Link
from provision.policy.leases import (
    BOUND,
    DECLINED,
    OFFERED,
    RELEASED,
    LeaseDel,
    LeasePut,
    LeaseTable,
    Pool,
)
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import BOOTREPLY, decode, encode
from provision.state import StateStore
from provision.state.leases import LeaseJournal
from tests.support.dhcp_support import INVENTORY, PXE_BIOS, client_packet

# A /28 holding every kind of claimed address: hosts (.1-.4), the server's own address on
# the link (.9), the master address (.10), a virtual service's VIP (.11), an LVS pair's
# gateway VIP (.12), the DNS server (.13) and the gateway (.14). The pool is what is left.
POOL_INV = """\
cluster:
  name: pool
  domain: pool.example
  master_address: 198.18.4.10
  masters: {primary: m01}
networks:
  tiny: {cidr: 198.18.4.0/28, gateway: 198.18.4.14, dns: [198.18.4.13], mtu: 9000}
hwtypes:
  vm: {nics: [eth0]}
images:
  base: {version: v1}
services:
  lvs: {units: [keepalived.service]}
roles:
  master: {services: [], networks: [tiny], image: base, hwtype: vm, boot: disk,
           bond: {mode: none}}
  lvs: {services: [lvs], networks: [tiny], image: base, hwtype: vm, bond: {mode: none}}
  web: {services: [], networks: [tiny], image: base, hwtype: vm, bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:00:04:01"], addresses: {tiny: 198.18.4.1}}
  lvs1: {role: lvs, macs: ["52:54:00:00:04:02"], addresses: {tiny: 198.18.4.2}}
  lvs2: {role: lvs, macs: ["52:54:00:00:04:03"], addresses: {tiny: 198.18.4.3}}
  w1: {role: web, macs: ["52:54:00:00:04:04"], addresses: {tiny: 198.18.4.4}}
lvs_pairs:
  lb:
    hosts: {lvs1: active, lvs2: backup}
    virtual_router_id: 51
    gateway_vips: {tiny: 198.18.4.12}
virtual_services:
  www: {vip: 198.18.4.11, port: 80, role: web, check: {type: TCP_CHECK}}
"""
PINV = loads(POOL_INV, "pool.yaml")
NET = IPv4Network("198.18.4.0/28")
LINK = Link("eth0", IPv4Address("198.18.4.9"), NET)
SID = LINK.address
FREE = {IPv4Address(f"198.18.4.{i}") for i in (5, 6, 7, 8)}
EXCLUDED = [a for a in NET if a not in FREE]  # .0-.4, .9-.15
W1 = "52:54:00:00:04:04"
W1_IP = IPv4Address("198.18.4.4")
UNKNOWN = [f"52:54:00:00:ee:{i:02x}" for i in range(1, 7)]
T0 = 1_000_000.0


def pol(inv: object = PINV, **kw: object) -> DhcpPolicy:
    return DhcpPolicy(inv, LeaseTable(), DhcpSettings(discovery=True, **kw))  # type: ignore


def run(p: DhcpPolicy, mtype: int, mac: str, now: float = T0, link: Link = LINK,
        **kw: object) -> Decision:
    pkt = client_packet(mtype, mac, **kw)  # type: ignore[arg-type]
    return p.handle(decode(encode(pkt)), link, now)


def kind(d: Decision) -> int | None:
    return d.reply.message_type if d.reply is not None else None


def lease_up(p: DhcpPolicy, mac: str, now: float = T0) -> IPv4Address:
    offer = run(p, o.DISCOVER, mac, now)
    assert offer.reply is not None, offer.drop
    ip = offer.reply.yiaddr
    ack = run(p, o.REQUEST, mac, now, requested=str(ip), server=SID)
    assert kind(ack) == o.ACK, ack.note
    return ip


# -- 1. exclusions -------------------------------------------------------------------

def test_pool_is_the_network_minus_every_claimed_address() -> None:
    pool = policy_dhcp.build_pool(PINV, PINV.networks["tiny"], [LINK.address])
    assert {IPv4Address(i) for i in range(int(NET[0]), int(NET[-1]) + 1) if i in pool} == FREE
    assert pool.size == len(FREE)
    assert pool.first == int(NET[1]) and pool.last == int(NET[-2])


def test_exhausting_the_pool_hands_out_exactly_the_free_addresses() -> None:
    p = pol()
    got = [run(p, o.DISCOVER, mac).reply for mac in UNKNOWN]
    offered = [r.yiaddr for r in got if r is not None]
    assert sorted(offered) == sorted(FREE) and len(offered) == len(FREE)
    assert run(p, o.DISCOVER, "52:54:00:00:ee:77", T0 + 2).drop == "pool_exhausted"


@pytest.mark.parametrize("ip", EXCLUDED, ids=str)
def test_request_of_an_excluded_address_is_naked(ip: IPv4Address) -> None:
    p = pol()
    selecting = run(p, o.REQUEST, UNKNOWN[0], requested=str(ip), server=SID)
    assert kind(selecting) == o.NAK, (ip, selecting)
    rebinding = run(p, o.REQUEST, UNKNOWN[0], ciaddr=str(ip))
    assert kind(rebinding) == o.NAK, (ip, rebinding)
    # Asked for as a hint in a DISCOVER, it is not what is offered.
    offer = run(p, o.DISCOVER, UNKNOWN[1], requested=str(ip))
    assert offer.reply is not None and offer.reply.yiaddr in FREE


def test_known_host_gets_its_own_address_even_though_the_pool_excludes_it() -> None:
    d = run(pol(), o.DISCOVER, W1)
    assert d.reply is not None and d.reply.yiaddr == W1_IP and d.host == "w1"


class NoOfferOfAnExcludedAddress(RuleBasedStateMachine):
    """Whatever clients do, no OFFER or ACK gives a client an address the pool excludes
    (the known host w1 gets its own address and nothing else)."""

    @initialize()
    def setup(self) -> None:
        self.p = pol(pool_lease_time=30, offer_hold=10, decline_quarantine=20)
        self.now = T0

    def _send(self, mtype: int, mac: str, **kw: object) -> None:
        d = run(self.p, mtype, mac, self.now, **kw)
        r = d.reply
        if r is None or r.message_type not in (o.OFFER, o.ACK):
            return
        if mac == W1:
            assert r.yiaddr == W1_IP
        else:
            assert r.yiaddr in FREE, (mtype, mac, kw, r.yiaddr)

    @rule(mac=st.sampled_from([*UNKNOWN, W1]), hint=st.sampled_from([None, *NET]))
    def discover(self, mac: str, hint: IPv4Address | None) -> None:
        self._send(o.DISCOVER, mac, requested=str(hint) if hint else None)

    @rule(mac=st.sampled_from([*UNKNOWN, W1]), ip=st.sampled_from(list(NET)))
    def select(self, mac: str, ip: IPv4Address) -> None:
        self._send(o.REQUEST, mac, requested=str(ip), server=SID)

    @rule(mac=st.sampled_from([*UNKNOWN, W1]), ip=st.sampled_from(list(NET)))
    def init_reboot(self, mac: str, ip: IPv4Address) -> None:
        self._send(o.REQUEST, mac, requested=str(ip))

    @rule(mac=st.sampled_from([*UNKNOWN, W1]), ip=st.sampled_from(list(NET)),
          unicast=st.booleans())
    def renew(self, mac: str, ip: IPv4Address, unicast: bool) -> None:
        link = Link(LINK.interface, LINK.address, LINK.network, unicast=unicast)
        d = run(self.p, o.REQUEST, mac, self.now, link=link, ciaddr=str(ip))
        if d.reply is not None and d.reply.message_type == o.ACK and mac != W1:
            assert d.reply.yiaddr in FREE

    @rule(mac=st.sampled_from(UNKNOWN), ip=st.sampled_from(list(NET)))
    def release(self, mac: str, ip: IPv4Address) -> None:
        self._send(o.RELEASE, mac, ciaddr=str(ip), server=SID)

    @rule(mac=st.sampled_from(UNKNOWN), ip=st.sampled_from(list(NET)))
    def decline(self, mac: str, ip: IPv4Address) -> None:
        self._send(o.DECLINE, mac, requested=str(ip), server=SID)

    @rule(dt=st.sampled_from([1, 5, 15, 40]))
    def wait(self, dt: int) -> None:
        self.now += dt

    @invariant()
    def no_lease_on_an_excluded_address(self) -> None:
        for lease in self.p.table.by_ip.values():
            assert lease.address in FREE or (lease.mac, lease.address) == (W1, W1_IP), lease


NoOfferOfAnExcludedAddress.TestCase.settings = settings(max_examples=60,
                                                        stateful_step_count=30, deadline=None)
test_no_offer_or_ack_of_an_excluded_address = NoOfferOfAnExcludedAddress.TestCase


# -- 2. cursor wrap and offer hold (the 'tiny' /29 of dhcp_support: pool .2-.5) ---------

LAB = loads(INVENTORY, "lab.yaml")
TINY = Link("eth3", IPv4Address("198.18.2.6"), IPv4Network("198.18.2.0/29"))
TINY_FREE = {IPv4Address(f"198.18.2.{i}") for i in (2, 3, 4, 5)}


def test_cursor_wraps_to_the_start_never_to_the_broadcast_address() -> None:
    p = pol(LAB, offer_hold=10)
    for rnd in range(3):  # each round exhausts the pool, then the offers expire
        now = T0 + 20 * rnd
        macs = [f"52:54:00:00:e{rnd}:{i:02x}" for i in range(5)]
        got = [run(p, o.DISCOVER, m, now, link=TINY) for m in macs]
        offered = [d.reply.yiaddr for d in got if d.reply is not None]
        assert sorted(offered) == sorted(TINY_FREE), (rnd, offered)
        assert got[-1].drop == "pool_exhausted"


def test_pool_cursor_wraps_after_handing_out_the_last_address() -> None:
    pool, table = Pool("n", 2, 5, set()), LeaseTable()
    for i, want in enumerate((2, 3, 4, 5)):
        mac = f"m{i}"
        assert pool.allocate(table, mac, T0) == want
        table.offer("n", mac, want, T0 + 10)
    assert pool.allocate(table, "late", T0 + 11) == 2  # wrapped, not 6


def test_second_discover_for_the_last_address_waits_for_the_offer_hold() -> None:
    p = pol(LAB, offer_hold=60)
    for i in range(3):
        lease_up_tiny(p, f"52:54:00:00:e1:{i:02x}", T0)  # bound: .2, .3, .4
    last = run(p, o.DISCOVER, "52:54:00:00:e2:01", T0, link=TINY)
    assert last.reply is not None and last.reply.yiaddr == IPv4Address("198.18.2.5")
    for dt in (2, 30, 59):
        assert run(p, o.DISCOVER, "52:54:00:00:e2:02", T0 + dt,
                   link=TINY).drop == "pool_exhausted", dt
    after = run(p, o.DISCOVER, "52:54:00:00:e2:02", T0 + 61, link=TINY)
    assert after.reply is not None and after.reply.yiaddr == IPv4Address("198.18.2.5")


def lease_up_tiny(p: DhcpPolicy, mac: str, now: float) -> IPv4Address:
    offer = run(p, o.DISCOVER, mac, now, link=TINY)
    assert offer.reply is not None, offer.drop
    ack = run(p, o.REQUEST, mac, now, link=TINY, requested=str(offer.reply.yiaddr),
              server=TINY.address)
    assert kind(ack) == o.ACK, ack.note
    return offer.reply.yiaddr


def test_exhausted_pool_is_rescanned_after_one_second_not_before() -> None:
    pool, table = Pool("n", 2, 3, set()), LeaseTable()
    for mac in ("a", "b"):
        ip = pool.allocate(table, mac, T0)
        assert ip is not None
        table.bind("n", mac, ip, T0 + 100)
    assert pool.allocate(table, "c", T0) is None
    lease = table.of("n", "a")
    assert lease is not None
    table.release(lease, T0 + 0.5)
    assert pool.allocate(table, "c", T0 + 0.5) is None  # no rescan within the second
    assert pool.allocate(table, "c", T0 + 1.0) == lease.ip


# -- 3. DECLINE by a client that does not hold the lease ---------------------------------

def test_decline_by_another_client_is_refused_and_the_lease_kept() -> None:
    p = pol()
    a, b = UNKNOWN[0], UNKNOWN[1]
    ip = lease_up(p, a)
    d = run(p, o.DECLINE, b, T0 + 1, requested=str(ip), server=SID)
    assert d.drop == "decline_not_leased" and not d.lazy and not d.durable
    lease = p.table.at(int(ip))
    assert lease is not None and lease.mac == a and lease.state == BOUND
    renew = run(p, o.REQUEST, a, T0 + 2, ciaddr=str(ip))
    assert kind(renew) == o.ACK and renew.reply and renew.reply.yiaddr == ip
    # A DECLINE of an address nobody holds is refused as well.
    free = next(iter(FREE - {ip}))
    assert run(p, o.DECLINE, b, T0 + 3, requested=str(free),
               server=SID).drop == "decline_not_leased"


def test_decline_by_the_holder_quarantines_for_the_configured_time() -> None:
    p = pol(decline_quarantine=100)
    ip = lease_up(p, UNKNOWN[0])
    d = run(p, o.DECLINE, UNKNOWN[0], T0 + 1, requested=str(ip), server=SID)
    assert d.drop is None
    puts = [c.lease for c in d.lazy if isinstance(c, LeasePut)]
    assert [(x.ip, x.mac, x.network, x.state, x.expires) for x in puts] == [
        (int(ip), "", "tiny", DECLINED, T0 + 101)]
    assert not p.table.free_for(int(ip), UNKNOWN[0], T0 + 100)
    assert p.table.free_for(int(ip), UNKNOWN[0], T0 + 101)
    assert p.table.of("tiny", UNKNOWN[0]) is None
    held = run(p, o.REQUEST, UNKNOWN[1], T0 + 50, requested=str(ip), server=SID)
    assert kind(held) == o.NAK
    assert run(p, o.DECLINE, UNKNOWN[0], T0 + 2, requested=str(ip),
               server="198.18.4.8").drop == "other_server"


# -- 9. policy branches ----------------------------------------------------------------

def test_a_bootreply_is_not_a_request() -> None:
    pkt = client_packet(o.DISCOVER, UNKNOWN[0])
    from dataclasses import replace

    assert pol().handle(replace(pkt, op=BOOTREPLY), LINK, T0).drop == "not_request"


def test_request_on_the_pxe_port_without_proxy_is_dropped() -> None:
    pxe = Link("eth0", LINK.address, NET, port=4011)
    assert run(pol(), o.DISCOVER, UNKNOWN[0], link=pxe).drop == "wrong_port"
    assert run(pol(), o.DISCOVER, W1, link=pxe).drop == "wrong_port"


def test_request_from_a_network_not_in_the_inventory_is_dropped() -> None:
    elsewhere = Link("eth9", IPv4Address("198.18.200.1"), IPv4Network("198.18.200.0/24"))
    assert run(pol(), o.DISCOVER, UNKNOWN[0], link=elsewhere).drop == "unknown_network"
    relayed = run(pol(), o.DISCOVER, UNKNOWN[0], giaddr="198.18.201.1")
    assert relayed.drop == "unknown_network"


def test_nak_to_a_renewing_client_is_broadcast() -> None:
    p = pol()
    unicast = Link("eth0", LINK.address, NET, unicast=True)
    d = run(p, o.REQUEST, UNKNOWN[0], link=unicast, ciaddr="198.18.4.11")  # the VIP
    assert d.state == "renewing" and kind(d) == o.NAK and d.to == TO_BROADCAST
    w1 = run(p, o.REQUEST, W1, link=unicast, ciaddr="198.18.4.5")
    assert w1.state == "renewing" and kind(w1) == o.NAK and w1.to == TO_BROADCAST


@pytest.mark.parametrize("arch", [1, 2, 6, 10, 16, 0x1234])
def test_unknown_client_architecture_gets_an_address_but_no_boot_file(arch: int) -> None:
    extra = {**PXE_BIOS, o.CLIENT_ARCH: o.u16(arch)}
    d = run(pol(), o.DISCOVER, W1, extra=extra)
    assert d.reply is not None and d.reply.yiaddr == W1_IP
    assert o.BOOTFILE_NAME not in d.reply.options and d.reply.file == b""


def test_network_mtu_is_option_26_and_only_when_set() -> None:
    d = run(pol(), o.DISCOVER, W1)
    assert d.reply is not None and d.reply.options[26] == o.u16(9000)
    lab = run(pol(LAB), o.DISCOVER, "52:54:00:00:01:01",
              link=Link("eth0", IPv4Address("198.18.0.1"), IPv4Network("198.18.0.0/24")))
    assert lab.reply is not None and 26 not in lab.reply.options


def test_remembered_unknown_macs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_dhcp, "SEEN_LIMIT", 3)
    p = pol()
    for i in range(10):
        d = run(p, o.DISCOVER, f"52:54:00:00:ef:{i:02x}", T0 + 2 * i)
        assert any(c.mac == f"52:54:00:00:ef:{i:02x}" for c in d.lazy if hasattr(c, "arch"))
        assert len(p._seen) <= 3
    # Within the interval a sighting is not written again; after it, it is.
    p2 = pol(sighting_interval=60.0)
    assert run(p2, o.DISCOVER, UNKNOWN[0], T0).lazy
    assert not [c for c in run(p2, o.DISCOVER, UNKNOWN[0], T0 + 59.9).lazy
                if hasattr(c, "arch")]
    assert [c for c in run(p2, o.DISCOVER, UNKNOWN[0], T0 + 60).lazy if hasattr(c, "arch")]


# -- 10. restart fidelity of the journal ---------------------------------------------

def test_journal_reload_gives_back_every_lease_field_by_field(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    journal = LeaseJournal(store)
    p = DhcpPolicy(PINV, LeaseTable(), DhcpSettings(discovery=True, pool_lease_time=600,
                                                    decline_quarantine=900))
    changes: list[object] = []

    def send(mtype: int, mac: str, now: float, **kw: object) -> Decision:
        d = run(p, mtype, mac, now, **kw)
        changes.extend(d.durable + d.lazy)  # as the service commits them
        return d

    ips = []
    for i, mac in enumerate(UNKNOWN[:3]):
        offer = send(o.DISCOVER, mac, T0 + i)
        ip = offer.reply.yiaddr  # type: ignore[union-attr]
        assert kind(send(o.REQUEST, mac, T0 + i, requested=str(ip), server=SID)) == o.ACK
        ips.append(ip)
    send(o.DECLINE, UNKNOWN[1], T0 + 5, requested=str(ips[1]), server=SID)
    send(o.RELEASE, UNKNOWN[2], T0 + 6, ciaddr=str(ips[2]), server=SID)
    send(o.REQUEST, W1, T0 + 7, requested=str(W1_IP), server=SID)
    journal.commit(changes, T0 + 8)  # type: ignore[arg-type]
    store.close()

    def rows(leases: object) -> list[tuple[object, ...]]:
        return sorted((x.ip, x.mac, x.network, x.state, x.expires, x.hostname)
                      for x in leases if x.state != OFFERED)  # type: ignore[attr-defined]

    loaded = rows(LeaseJournal(StateStore(tmp_path)).load())
    assert loaded == rows(p.table.by_ip.values())
    assert loaded == sorted([
        (int(ips[0]), UNKNOWN[0], "tiny", BOUND, T0 + 600, ""),
        (int(ips[1]), "", "tiny", DECLINED, T0 + 5 + 900, ""),
        (int(ips[2]), UNKNOWN[2], "tiny", RELEASED, T0 + 6, ""),
        (int(W1_IP), W1, "tiny", BOUND, T0 + 7 + 3600, "w1"),
    ])


def test_a_move_deletes_the_old_row_in_the_journal(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    journal = LeaseJournal(store)
    t = LeaseTable()
    journal.commit(t.bind("tiny", UNKNOWN[0], int(NET[5]), T0 + 600), T0)
    moved = t.bind("tiny", UNKNOWN[0], int(NET[6]), T0 + 600)
    assert LeaseDel(int(NET[5])) in moved
    journal.commit(moved, T0 + 1)
    store.close()
    rows = [(x.ip, x.mac) for x in LeaseJournal(StateStore(tmp_path)).load()]
    assert rows == [(int(NET[6]), UNKNOWN[0])]


def test_after_a_restart_init_reboot_is_acked_and_another_mac_is_naked(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    journal = LeaseJournal(store)
    p = DhcpPolicy(PINV, LeaseTable(journal.load()), DhcpSettings(discovery=True))
    offer = run(p, o.DISCOVER, UNKNOWN[0])
    ip = offer.reply.yiaddr  # type: ignore[union-attr]
    ack = run(p, o.REQUEST, UNKNOWN[0], requested=str(ip), server=SID)
    journal.commit(offer.lazy + ack.durable + ack.lazy, T0)
    store.close()
    p2 = DhcpPolicy(PINV, LeaseTable(LeaseJournal(StateStore(tmp_path)).load()),
                    DhcpSettings(discovery=True))
    # INIT-REBOOT first: only the reloaded lease can make this an ACK (an unknown
    # client in INIT-REBOOT is ignored, RFC 2131 4.3.2).
    reboot = run(p2, o.REQUEST, UNKNOWN[0], T0 + 10, requested=str(ip))
    assert reboot.state == "init-reboot" and kind(reboot) == o.ACK
    assert reboot.reply is not None and reboot.reply.yiaddr == ip
    thief = run(p2, o.REQUEST, UNKNOWN[1], T0 + 11, requested=str(ip), server=SID)
    assert kind(thief) == o.NAK
    other = run(p2, o.DISCOVER, UNKNOWN[1], T0 + 12, requested=str(ip))
    assert other.reply is not None and other.reply.yiaddr != ip
