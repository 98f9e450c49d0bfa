"""DHCP policy: identity, addresses, boot selection, RFC 2131 states, pool, proxy."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from provision.inventory import loads
from provision.layout import DISCOVERY_SCRIPT
from provision.policy.dhcp import (
    TO_BROADCAST,
    TO_SOURCE,
    Decision,
    Destination,
    DhcpPolicy,
    DhcpSettings,
    Link,
)
from provision.policy.leases import LeaseDel, LeasePut, LeaseTable, Sighting
from provision.protocol import dhcp_options as o
from provision.services.dhcp_steer import worker_of
from provision.state import StateStore
from provision.state.leases import LeaseJournal
from tests.support.dhcp_policy_support import INV, LAN, T0, run
from tests.support.dhcp_support import (
    INVENTORY,
    IPXE_EFI,
    IPXE_ROM,
    OLD_MAC,
    OVMF,
    PXE_BIOS,
    SERVER,
    UNKNOWN_MAC,
    W1_MAC,
    client_packet,
)


def policy(**kw: object) -> DhcpPolicy:
    return DhcpPolicy(INV, LeaseTable(), DhcpSettings(**kw))  # type: ignore[arg-type]


def test_known_host_gets_its_address_and_identity() -> None:
    d = run(policy(), o.DISCOVER, W1_MAC)
    r = d.reply
    assert r is not None and r.message_type == o.OFFER and d.to == TO_BROADCAST
    assert r.yiaddr == IPv4Address("198.18.0.11") and d.host == "w1"
    assert r.options[o.HOST_NAME] == b"w1" and r.options[o.DOMAIN_NAME] == b"lab.example"
    assert r.options[o.SUBNET_MASK] == o.ip("255.255.255.0")
    assert r.options[o.ROUTER] == o.ip("198.18.0.254")
    assert r.options[o.DNS_SERVERS] == o.ip("198.18.0.1")
    assert r.options[o.SERVER_ID] == SERVER.packed
    assert r.options[o.LEASE_TIME] == o.u32(3600)
    assert r.options[o.RENEWAL_TIME] == o.u32(1800)
    assert r.options[o.REBINDING_TIME] == o.u32(3150)
    assert o.BOOTFILE_NAME not in r.options and r.file == b""  # udhcpc does not netboot
    assert not d.durable  # an OFFER needs no fsync


def test_same_address_across_firmware_ipxe_and_linux_by_chaddr_only() -> None:
    p = policy()
    ovmf = run(p, o.DISCOVER, W1_MAC, extra=OVMF, client_id=False, broadcast=True)
    ipxe = run(p, o.DISCOVER, W1_MAC, extra={**IPXE_EFI, o.CLIENT_ID: b"\x00other"})
    linux = run(p, o.DISCOVER, W1_MAC)
    assert ovmf.reply and ipxe.reply and linux.reply
    assert ovmf.reply.yiaddr == ipxe.reply.yiaddr == linux.reply.yiaddr
    # The same holds for a machine the pool serves: option 61 and the UUID differ
    # between the stages, the address does not; another chaddr with the same option 61
    # is another machine.
    pool = policy(discovery=True)
    stages = [run(pool, o.DISCOVER, UNKNOWN_MAC, extra=OVMF, client_id=False),
              run(pool, o.DISCOVER, UNKNOWN_MAC, extra={**IPXE_EFI, o.CLIENT_ID: b"\x00x",
                                                        o.CLIENT_UUID: b"\x00" + bytes(
                                                            range(16))}),
              run(pool, o.DISCOVER, UNKNOWN_MAC)]
    addrs = {d.reply.yiaddr for d in stages if d.reply is not None}
    assert len(addrs) == 1 and len(stages) == 3
    twin = run(pool, o.DISCOVER, "52:54:00:00:ee:09",
               extra={o.CLIENT_ID: b"\x01" + bytes.fromhex(UNKNOWN_MAC.replace(":", ""))})
    assert twin.reply is not None and twin.reply.yiaddr not in addrs


@pytest.mark.parametrize("mac,extra,expected", [
    (W1_MAC, PXE_BIOS, "undionly.kpxe"),
    (W1_MAC, OVMF, "ipxe.efi"),
    (W1_MAC, {**OVMF, o.CLIENT_ARCH: o.u16(9)}, "ipxe.efi"),
    (W1_MAC, IPXE_ROM, "http://198.18.0.1/hosts/w1/boot.ipxe"),
    (W1_MAC, IPXE_EFI, "http://198.18.0.1/hosts/w1/boot.ipxe"),
    (W1_MAC, {**PXE_BIOS, o.IPXE_ENCAP: b""}, "http://198.18.0.1/hosts/w1/boot.ipxe"),
    (W1_MAC, {**PXE_BIOS, o.USER_CLASS: b"\x04iPXE"}, "http://198.18.0.1/hosts/w1/boot.ipxe"),
    (OLD_MAC, PXE_BIOS, "pxelinux.0"),
    (OLD_MAC, IPXE_ROM, "pxelinux.0"),  # never hand the ROM an iPXE script in pxelinux mode
    (OLD_MAC, OVMF, "ipxe.efi"),  # pxelinux.0 is BIOS only
])
def test_boot_file_choice(mac: str, extra: dict[int, bytes], expected: str) -> None:
    d = run(policy(), o.DISCOVER, mac, extra=extra)
    r = d.reply
    assert r is not None
    assert r.options[o.BOOTFILE_NAME] == expected.encode() + b"\0"
    assert r.file == expected.encode()
    assert r.siaddr == SERVER and r.options[o.TFTP_SERVER] == b"198.18.0.1"


def test_arm64_loader_only_when_present_and_http_port_in_url() -> None:
    arm = {**OVMF, o.CLIENT_ARCH: o.u16(11)}
    without = run(policy(loaders=frozenset({"ipxe.efi"})), o.DISCOVER, W1_MAC, extra=arm)
    assert without.reply and o.BOOTFILE_NAME not in without.reply.options
    with_arm = run(policy(loaders=frozenset({"ipxe-arm64.efi"})), o.DISCOVER, W1_MAC, extra=arm)
    assert with_arm.reply and with_arm.reply.file == b"ipxe-arm64.efi"
    d = run(policy(http_port=8080), o.DISCOVER, W1_MAC, extra=IPXE_ROM)
    assert d.reply and d.reply.file == b"http://198.18.0.1:8080/hosts/w1/boot.ipxe"


def test_request_selecting_acks_with_durable_lease() -> None:
    p = policy()
    d = run(p, o.REQUEST, W1_MAC, requested="198.18.0.11", server=SERVER)
    assert d.reply and d.reply.message_type == o.ACK and d.state == "selecting"
    puts = [c for c in d.durable if isinstance(c, LeasePut)]
    assert [(c.lease.mac, c.lease.ip) for c in puts] == [(W1_MAC, int(IPv4Address("198.18.0.11")))]


def test_request_for_another_server_is_silent_and_wrong_address_is_naked() -> None:
    p = policy()
    assert run(p, o.REQUEST, W1_MAC, requested="198.18.0.11",
               server="198.18.0.2").drop == "other_server"
    nak = run(p, o.REQUEST, W1_MAC, requested="198.18.0.99", server=SERVER)
    assert nak.reply and nak.reply.message_type == o.NAK and nak.to == TO_BROADCAST
    assert nak.reply.yiaddr == IPv4Address(0)
    wrong_net = run(p, o.REQUEST, W1_MAC, requested="198.18.1.11")  # INIT-REBOOT, moved
    assert wrong_net.state == "init-reboot" and wrong_net.reply
    assert wrong_net.reply.message_type == o.NAK


def test_renew_is_unicast_to_ciaddr() -> None:
    unicast = Link("eth0", SERVER, LAN.network, unicast=True)
    d = run(policy(), o.REQUEST, W1_MAC, ciaddr="198.18.0.11", link=unicast)
    assert d.state == "renewing" and d.reply and d.reply.message_type == o.ACK
    assert d.to == Destination(IPv4Address("198.18.0.11"), 68)
    assert run(policy(), o.REQUEST, W1_MAC, ciaddr="198.18.0.11").state == "rebinding"


def test_relay_picks_network_by_giaddr_and_echoes_option_82() -> None:
    agent = o.build_tlv({1: b"port3"})
    d = run(policy(), o.DISCOVER, W1_MAC, giaddr="198.18.1.1", extra={o.RELAY_AGENT_INFO: agent})
    r = d.reply
    assert r and r.yiaddr == IPv4Address("198.18.1.11") and r.giaddr == IPv4Address("198.18.1.1")
    assert r.options[o.RELAY_AGENT_INFO] == agent and r.options[o.ROUTER] == o.ip("198.18.1.1")
    assert d.to == Destination(IPv4Address("198.18.1.1"), 67)
    nak = run(policy(), o.REQUEST, W1_MAC, giaddr="198.18.1.1", requested="198.18.0.11")
    assert nak.reply and nak.reply.message_type == o.NAK and nak.reply.broadcast


def test_unknown_mac_ignored_without_discovery() -> None:
    assert run(policy(), o.DISCOVER, UNKNOWN_MAC).drop == "unknown_mac"
    assert run(policy(), o.DISCOVER, UNKNOWN_MAC, extra=PXE_BIOS).drop == "unknown_mac"


def test_discovery_pool_offers_free_address_and_records_machine() -> None:
    p = policy(discovery=True)
    d = run(p, o.DISCOVER, UNKNOWN_MAC, extra=IPXE_ROM)
    r = d.reply
    assert r is not None and r.yiaddr in IPv4Network("198.18.0.0/24")
    taken = {IPv4Address(a) for a in ("198.18.0.0", "198.18.0.1", "198.18.0.11", "198.18.0.12",
                                      "198.18.0.21", "198.18.0.254", "198.18.0.255")}
    assert r.yiaddr not in taken and o.HOST_NAME not in r.options
    assert r.file == f"http://198.18.0.1/{DISCOVERY_SCRIPT}".encode()
    seen = [c for c in d.lazy if isinstance(c, Sighting)]
    assert seen and seen[0].arch == 0 and seen[0].user_class == "iPXE"
    assert seen[0].uuid == "00" * 16 and seen[0].vendor_class.startswith("PXEClient")
    # The same client gets the same address again; another client a different one.
    assert run(p, o.DISCOVER, UNKNOWN_MAC).reply.yiaddr == r.yiaddr  # type: ignore[union-attr]
    other = run(p, o.DISCOVER, "52:54:00:00:ee:02").reply
    assert other is not None and other.yiaddr != r.yiaddr
    ack = run(p, o.REQUEST, UNKNOWN_MAC, requested=str(r.yiaddr), server=SERVER)
    assert ack.reply and ack.reply.message_type == o.ACK
    assert ack.reply.options[o.LEASE_TIME] == o.u32(600)
    # the other client cannot take it
    steal = run(p, o.REQUEST, "52:54:00:00:ee:02", requested=str(r.yiaddr), server=SERVER)
    assert steal.reply and steal.reply.message_type == o.NAK


def test_decline_quarantines_and_release_frees() -> None:
    p = policy(discovery=True)
    a = run(p, o.DISCOVER, UNKNOWN_MAC).reply.yiaddr  # type: ignore[union-attr]
    run(p, o.REQUEST, UNKNOWN_MAC, requested=str(a), server=SERVER)
    dec = run(p, o.DECLINE, UNKNOWN_MAC, requested=str(a), server=SERVER)
    assert dec.drop is None and "quarantined" in dec.note
    again = run(p, o.DISCOVER, UNKNOWN_MAC, T0 + 1).reply
    assert again is not None and again.yiaddr != a
    later = run(p, o.DISCOVER, "52:54:00:00:ee:03", T0 + 2, requested=str(a))
    assert later.reply and later.reply.yiaddr != a  # still quarantined
    b = again.yiaddr
    run(p, o.REQUEST, UNKNOWN_MAC, T0 + 3, requested=str(b), server=SERVER)
    rel = run(p, o.RELEASE, UNKNOWN_MAC, T0 + 4, ciaddr=str(b), server=SERVER)
    assert rel.drop is None and rel.reply is None and rel.lazy
    taken = run(p, o.REQUEST, "52:54:00:00:ee:03", T0 + 5, requested=str(b), server=SERVER)
    assert taken.reply and taken.reply.message_type == o.ACK


def test_inform_acks_without_address_or_lease_time() -> None:
    d = run(policy(), o.INFORM, W1_MAC, ciaddr="198.18.0.11")
    r = d.reply
    assert r and r.message_type == o.ACK and r.yiaddr == IPv4Address(0)
    assert r.ciaddr == IPv4Address("198.18.0.11") and o.LEASE_TIME not in r.options
    assert d.to == Destination(IPv4Address("198.18.0.11"), 68)


def test_bootp_and_server_messages_are_dropped() -> None:
    p = policy()
    assert run(p, o.OFFER, W1_MAC).drop == "server_message"
    bootp = client_packet(o.DISCOVER, W1_MAC)
    bootp.options.clear()
    assert p.handle(bootp, LAN, T0).drop == "bootp"


def test_proxy_gives_boot_information_only() -> None:
    p = policy(proxy=True)
    d = run(p, o.DISCOVER, W1_MAC, extra=PXE_BIOS)
    r = d.reply
    assert r and r.message_type == o.OFFER and r.yiaddr == IPv4Address(0)
    assert r.options[o.VENDOR_CLASS] == b"PXEClient" and r.file == b"undionly.kpxe"
    assert r.options[o.VENDOR_SPECIFIC] == b"\x06\x01\x08\xff"
    assert r.options[o.CLIENT_UUID] == bytes(17) and r.siaddr == SERVER
    assert not ({o.LEASE_TIME, o.SUBNET_MASK, o.ROUTER} & set(r.options))
    assert run(p, o.DISCOVER, W1_MAC).drop == "not_pxe"
    assert run(p, o.REQUEST, W1_MAC, extra=PXE_BIOS, requested="198.18.0.50",
               server="198.18.0.99").drop == "proxy_not_discover"
    pxe_port = Link("eth0", SERVER, LAN.network, port=4011, unicast=True)
    ack = run(p, o.REQUEST, W1_MAC, link=pxe_port, ciaddr="198.18.0.50", extra=IPXE_ROM)
    assert ack.reply and ack.reply.message_type == o.ACK and ack.to == TO_SOURCE
    assert ack.reply.yiaddr == IPv4Address(0)
    assert ack.reply.file == b"http://198.18.0.1/hosts/w1/boot.ipxe"


def test_leases_survive_restart_through_the_journal(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    journal = LeaseJournal(store)
    p = DhcpPolicy(INV, LeaseTable(journal.load()), DhcpSettings(discovery=True))
    offer = run(p, o.DISCOVER, UNKNOWN_MAC)
    a = offer.reply.yiaddr  # type: ignore[union-attr]
    ack = run(p, o.REQUEST, UNKNOWN_MAC, requested=str(a), server=SERVER)
    journal.commit(offer.lazy + ack.durable + ack.lazy, T0)
    store.close()
    journal = LeaseJournal(StateStore(tmp_path))
    p2 = DhcpPolicy(INV, LeaseTable(journal.load()), DhcpSettings(discovery=True))
    # What was loaded, before any request touches the table (a renew would rebuild it).
    lease = p2.table.at(int(a))
    assert lease is not None
    assert (lease.mac, lease.network, lease.state, lease.expires) == (
        UNKNOWN_MAC, "lan", "bound", T0 + 600)
    # INIT-REBOOT first: only a reloaded lease makes it an ACK (RFC 2131 4.3.2).
    init_reboot = run(p2, o.REQUEST, UNKNOWN_MAC, T0 + 300, requested=str(a))
    assert init_reboot.reply and init_reboot.reply.message_type == o.ACK
    assert init_reboot.reply.yiaddr == a
    thief = run(p2, o.REQUEST, "52:54:00:00:ee:02", T0 + 300, requested=str(a), server=SERVER)
    assert thief.reply and thief.reply.message_type == o.NAK
    renew = run(p2, o.REQUEST, UNKNOWN_MAC, T0 + 300, ciaddr=str(a))
    assert renew.reply and renew.reply.message_type == o.ACK and renew.reply.yiaddr == a
    rows = journal.discovered()
    assert [r["mac"] for r in rows] == [UNKNOWN_MAC] and rows[0]["address"] == str(a)


def test_moving_to_another_address_deletes_the_old_row() -> None:
    t = LeaseTable()
    t.bind("lan", UNKNOWN_MAC, 100, T0)
    changes = t.bind("lan", UNKNOWN_MAC, 101, T0)
    assert LeaseDel(100) in changes and t.at(100) is None


# -- property: no address is ever leased to two clients at once -----------------------

TINY = Link("eth3", IPv4Address("198.18.2.6"), IPv4Network("198.18.2.0/29"))
MACS = [f"52:54:00:00:ee:{i:02x}" for i in range(6)] + [W1_MAC]
TINY_ADDRS = [str(IPv4Address("198.18.2.0") + i) for i in range(8)] + ["198.18.0.11"]


class NoDoubleLease(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.p = policy(discovery=True, pool_lease_time=50, offer_hold=10,
                        decline_quarantine=30)
        self.now = T0
        self.acked: dict[str, tuple[str, float]] = {}  # ip -> (mac, lease end)
        self.quarantine: dict[str, float] = {}

    def _send(self, mtype: int, mac: str, **kw: object) -> Decision:
        d = run(self.p, mtype, mac, self.now, link=TINY, **kw)
        r = d.reply
        if r is not None and r.message_type == o.ACK and r.yiaddr != IPv4Address(0):
            ip = str(r.yiaddr)
            holder = self.acked.get(ip)
            assert holder is None or holder[0] == mac or holder[1] <= self.now, (ip, holder, mac)
            assert self.quarantine.get(ip, 0) <= self.now, (ip, "quarantined")
            # A client holds one lease per network: a new address replaces its old one.
            for old in [k for k, v in self.acked.items() if v[0] == mac]:
                del self.acked[old]
            self.acked[ip] = (mac, self.now + 50)
        return d

    @rule(mac=st.sampled_from(MACS))
    def discover(self, mac: str) -> None:
        self._send(o.DISCOVER, mac)

    @rule(mac=st.sampled_from(MACS), ip=st.sampled_from(TINY_ADDRS))
    def select(self, mac: str, ip: str) -> None:
        self._send(o.REQUEST, mac, requested=ip, server=TINY.address)

    @rule(mac=st.sampled_from(MACS))
    def discover_then_select(self, mac: str) -> None:
        offer = self._send(o.DISCOVER, mac).reply
        if offer is not None:
            self._send(o.REQUEST, mac, requested=str(offer.yiaddr), server=TINY.address)

    @rule(mac=st.sampled_from(MACS), ip=st.sampled_from(TINY_ADDRS))
    def init_reboot(self, mac: str, ip: str) -> None:
        self._send(o.REQUEST, mac, requested=ip)

    @rule(mac=st.sampled_from(MACS), ip=st.sampled_from(TINY_ADDRS))
    def renew(self, mac: str, ip: str) -> None:
        self._send(o.REQUEST, mac, ciaddr=ip)

    @rule(mac=st.sampled_from(MACS), ip=st.sampled_from(TINY_ADDRS))
    def release(self, mac: str, ip: str) -> None:
        d = self._send(o.RELEASE, mac, ciaddr=ip, server=TINY.address)
        if d.drop is None and self.acked.get(ip, ("",))[0] == mac:
            del self.acked[ip]

    @rule(mac=st.sampled_from(MACS), ip=st.sampled_from(TINY_ADDRS))
    def decline(self, mac: str, ip: str) -> None:
        d = self._send(o.DECLINE, mac, requested=ip, server=TINY.address)
        if d.drop is None and d.lazy:
            self.acked.pop(ip, None)
            self.quarantine[ip] = self.now + 30

    @rule(dt=st.sampled_from([1, 5, 20, 60]))
    def wait(self, dt: int) -> None:
        self.now += dt

    @invariant()
    def table_is_consistent(self) -> None:
        t = self.p.table
        for net, macs in t.by_mac.items():
            for mac, lease in macs.items():
                assert t.by_ip[lease.ip] is lease and lease.mac == mac and lease.network == net


NoDoubleLease.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                           deadline=None)
test_no_address_leased_twice = NoDoubleLease.TestCase


def test_reload_takes_new_hosts_and_drops_removed_ones() -> None:
    p = policy()
    assert run(p, o.DISCOVER, UNKNOWN_MAC).drop == "unknown_mac"
    text = INVENTORY.replace('"52:54:00:00:01:01"', f'"{UNKNOWN_MAC}"')
    p.reload(loads(text, "lab.yaml"))
    d = run(p, o.DISCOVER, UNKNOWN_MAC)
    assert d.reply and d.reply.yiaddr == IPv4Address("198.18.0.11") and d.host == "w1"
    assert run(p, o.DISCOVER, W1_MAC).drop == "unknown_mac"


def test_discovered_command_lists_machines(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from provision.cli.main import cli

    runner = CliRunner()
    missing = runner.invoke(cli, ["discovered", "--state-dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no state" in missing.output
    (tmp_path / "state").mkdir()
    store = StateStore(tmp_path / "state")
    journal = LeaseJournal(store)
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True))
    offer = run(p, o.DISCOVER, UNKNOWN_MAC, extra=OVMF)
    a = offer.reply.yiaddr  # type: ignore[union-attr]
    ack = run(p, o.REQUEST, UNKNOWN_MAC, requested=str(a), server=SERVER, extra=OVMF)
    journal.commit(offer.lazy + ack.durable + ack.lazy, T0)
    store.close()
    out = runner.invoke(cli, ["discovered", "--state-dir", str(tmp_path / "state")])
    assert out.exit_code == 0, out.output
    line = out.output.splitlines()[2]
    assert UNKNOWN_MAC in line and "efi-x64" in line and str(a) in line
    assert "PXEClient:Arch:00007" in line and "0" * 32 in line


def test_ipxe_is_told_not_to_wait_for_proxy_offers_except_by_the_proxy() -> None:
    d = run(policy(), o.DISCOVER, W1_MAC, extra=IPXE_ROM)
    assert d.reply and d.reply.options[o.IPXE_ENCAP] == b"\xb0\x01\x01"  # 175.176 = 1
    plain = run(policy(), o.DISCOVER, W1_MAC, extra=PXE_BIOS)
    assert plain.reply and o.IPXE_ENCAP not in plain.reply.options
    proxied = run(policy(proxy=True), o.DISCOVER, W1_MAC, extra=IPXE_ROM)
    assert proxied.reply and o.IPXE_ENCAP not in proxied.reply.options


def test_renewal_from_a_relayed_subnet_comes_direct_and_is_judged_by_ciaddr() -> None:
    """RENEWING clients unicast to the server without the relay (giaddr 0)."""
    unicast = Link("eth0", SERVER, LAN.network, unicast=True)
    d = run(policy(), o.REQUEST, W1_MAC, ciaddr="198.18.1.11", link=unicast)
    assert d.reply and d.reply.message_type == o.ACK, d
    assert d.reply.yiaddr == IPv4Address("198.18.1.11")
    assert d.reply.options[o.ROUTER] == o.ip("198.18.1.1")
    assert d.to == Destination(IPv4Address("198.18.1.11"), 68)


class NoDoubleLeaseTwoWorkers(NoDoubleLease):
    """The same, with two DHCP worker processes (``--dhcp-workers 2``): each machine's
    requests go to the worker ``dhcp_steer.worker_of`` names, each worker has a table
    of its own and gives out its share of the pool; both start from the leases a single
    process left (on addresses of either share), as after a restart with another N."""

    @initialize(before=st.lists(st.tuples(st.sampled_from(MACS[:-1]),
                                          st.sampled_from(TINY_ADDRS[2:6])),
                                max_size=4, unique_by=(lambda t: t[0], lambda t: t[1])))
    def setup(self, before: list[tuple[str, str]]) -> None:  # type: ignore[override]
        self.ps = [DhcpPolicy(INV, LeaseTable(), DhcpSettings(
            discovery=True, pool_lease_time=50, offer_hold=10, decline_quarantine=30,
            share=(k, 2))) for k in range(2)]
        self.now = T0
        self.acked = {}
        self.quarantine = {}
        for mac, ip in before:  # what the one process had bound, loaded by both
            for p in self.ps:
                p.table.bind("tiny", mac, int(IPv4Address(ip)), T0 + 50)
            self.acked[ip] = (mac, T0 + 50)

    def _send(self, mtype: int, mac: str, **kw: object) -> Decision:
        self.p = self.ps[worker_of(bytes.fromhex(mac.replace(":", "")), 2)]
        return super()._send(mtype, mac, **kw)

    @invariant()
    def table_is_consistent(self) -> None:
        for worker in self.ps:
            self.p = worker
            super().table_is_consistent()


NoDoubleLeaseTwoWorkers.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                     deadline=None)
test_no_address_leased_twice_by_two_workers = NoDoubleLeaseTwoWorkers.TestCase
