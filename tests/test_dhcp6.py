"""DHCPv6: the codec and the policy (units), then ISC dhclient -6 against `dsas serve
--only dhcp6` in lab namespaces gets its host's inventory IPv6 address."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from lab.testing import Lab, Netns, require_tool
from provision.policy.dhcp6 import Dhcp6Policy, Link6
from provision.protocol import dhcp6 as d6
from tests.support.dhcp6_support import INV, LINK, SERVER_DUID, W1_LL, W1_MAC, W2_MAC, message
from tests.support.fuzzing import fuzz_cases
from tests.support.ipv6_support import INVENTORY
from tests.support.netns_thread import in_netns

OTHER_LL = IPv6Address("fe80::1234:5678:9abc:def0")  # stable-privacy style: no MAC inside
UUID_DUID = bytes((0, 4)) + bytes(16)  # DUID-UUID of a VM: all zeros




def ia_address(reply: d6.Dhcp6Message) -> IPv6Address | None:
    raw = reply.get(d6.IA_NA)
    assert raw is not None
    ia = d6.decode_ia_na(raw)
    assert ia.iaid == b"\x00\x00\x00\x07"
    for code, data in ia.options:
        if code == d6.IAADDR:
            return IPv6Address(data[:16])
    return None


def test_codec_round_trip_and_bad_lengths() -> None:
    m = message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.ELAPSED_TIME, b"\x00\x00"))
    assert m.msg_type == d6.SOLICIT and m.xid == b"\x12\x34\x56"
    assert d6.duid_mac(m.get(d6.CLIENTID) or b"") == W1_MAC
    llt = bytes((0, 1, 0, 1, 1, 2, 3, 4)) + bytes.fromhex("525400000101")  # DUID-LLT
    assert d6.duid_mac(llt) == W1_MAC and d6.duid_mac(llt[:-1]) is None
    assert d6.duid_mac(UUID_DUID) is None
    assert d6.eui64_mac(W1_LL) == W1_MAC and d6.eui64_mac(OTHER_LL) is None
    for bad in (b"\x01\x00", b"\x01abc\x00\x01\x00\x09xx", b"\x0cabc", b"\x01abc\x00"):
        with pytest.raises(d6.Dhcp6Error):
            d6.decode(bad)


def test_solicit_gets_the_hosts_address_by_duid_mac_and_eui64_source() -> None:
    p = Dhcp6Policy(INV)
    for duid, source in ((d6.duid_ll(W1_MAC), OTHER_LL), (UUID_DUID, W1_LL)):
        d = p.handle(message(d6.SOLICIT, duid), LINK, source)
        assert d.reply is not None and d.reply.msg_type == d6.ADVERTISE, d.drop
        assert d.host == "w1" and ia_address(d.reply) == IPv6Address("2001:db8:18::11")
        assert d.reply.get(d6.SERVERID) == SERVER_DUID and d.reply.get(d6.CLIENTID) == duid
        assert d.reply.xid == b"\x12\x34\x56"
    rapid = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.RAPID_COMMIT, b"")), LINK,
                     W1_LL)
    assert rapid.reply is not None and rapid.reply.msg_type == d6.REPLY
    req = p.handle(message(d6.REQUEST, d6.duid_ll(W1_MAC), (d6.SERVERID, SERVER_DUID)),
                   LINK, W1_LL)
    assert req.reply is not None and req.reply.msg_type == d6.REPLY
    assert ia_address(req.reply) == IPv6Address("2001:db8:18::11")


def test_who_is_not_answered() -> None:
    p = Dhcp6Policy(INV)
    cases = [
        (message(d6.SOLICIT, UUID_DUID), OTHER_LL, "no_mac"),  # no MAC anywhere
        (message(d6.SOLICIT, d6.duid_ll("52:54:00:00:ee:01")), W1_LL, "unknown_mac"),
        (message(d6.SOLICIT, None), W1_LL, "no_client_id"),
        (message(d6.REQUEST, d6.duid_ll(W1_MAC), (d6.SERVERID, b"other")), W1_LL,
         "other_server"),
        (message(d6.REQUEST, d6.duid_ll(W1_MAC)), W1_LL, "other_server"),
        (message(d6.ADVERTISE, d6.duid_ll(W1_MAC)), W1_LL, "server_message"),
    ]
    for msg, source, why in cases:
        d = p.handle(msg, source=source, link=LINK)
        assert d.reply is None and d.drop == why, (why, d.drop)
    no_v6 = Link6("br0", INV.networks["far"], None, SERVER_DUID)
    assert p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC)), no_v6, W1_LL).drop == \
        "no_ipv6_on_link"
    w2 = p.handle(message(d6.SOLICIT, d6.duid_ll(W2_MAC)), LINK, W1_LL)  # no addresses6
    assert w2.reply is not None and ia_address(w2.reply) is None
    assert b"\x00\x02" in (d6.decode_ia_na(w2.reply.get(d6.IA_NA) or b"").options[0][1][:2])


def test_boot_file_url_option_59_by_client_kind() -> None:
    p = Dhcp6Policy(INV)
    arch = (d6.CLIENT_ARCH_TYPE, b"\x00\x07")

    def boot(*extra: tuple[int, bytes]) -> bytes | None:
        d = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), *extra), LINK, W1_LL)
        assert d.reply is not None
        return d.reply.get(d6.BOOTFILE_URL)

    assert boot(arch) == b"tftp://[2001:db8:18::1]/ipxe.efi"
    assert boot(arch, (d6.USER_CLASS, b"\x00\x04iPXE")) == \
        b"http://[2001:db8:18::1]/hosts/w1/boot.ipxe"
    assert boot((d6.CLIENT_ARCH_TYPE, b"\x00\x10"),
                (d6.VENDOR_CLASS, b"\x00\x00\x01\x57\x00\x0aHTTPClient")) == \
        b"http://[2001:db8:18::1]/ipxe.efi"
    assert boot() is None  # Linux's DHCPv6 client: no boot file


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


def test_mutated_messages_through_the_policy_never_raise() -> None:
    rng = random.Random(22)
    p = Dhcp6Policy(INV)
    answered = 0
    for _ in range(2000):
        try:
            msg = d6.decode(mutated(rng, SEEDS))
        except d6.Dhcp6Error:
            continue
        d = p.handle(msg, LINK, rng.choice([W1_LL, OTHER_LL]))
        assert (d.reply is None) != (d.drop is None)
        answered += d.reply is not None
    assert answered > 0


def serve_dhcp6(lab: Lab, tmp_path: Path) -> tuple[Netns, str, Path, subprocess.Popen[bytes]]:
    inv = tmp_path / "lab.yaml"
    inv.write_text(INVENTORY)
    srv, cli = lab.netns("d6"), lab.netns("d6c")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    srv.run(["ip", "-6", "addr", "add", "2001:db8:18::1/64", "dev", "br0", "nodad"])
    ifc = lab.plug(srv, "br0", cli, "198.18.0.9/24")
    cli.run(["ip", "link", "set", ifc, "down"])
    cli.run(["ip", "link", "set", ifc, "address", W1_MAC])
    cli.run(["ip", "link", "set", ifc, "up"])
    time.sleep(2.5)  # link-local addresses finish duplicate address detection
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        serve = srv.popen([sys.executable, "-m", "provision", "serve", "--only", "dhcp6",
                           "--interface", "br0", "-i", str(inv), "--state-dir",
                           str(tmp_path / "state"), "-v"], stdout=f, stderr=subprocess.STDOUT)
    srv.wait_port(547, "udp")
    return cli, ifc, log, serve


def dhclient6(lab: Lab, cli: Netns, ifc: str, tmp_path: Path, log: Path,
              serve: subprocess.Popen[bytes]) -> str:
    dhclient = require_tool("dhclient")
    out = tmp_path / "dhclient.out"
    script = tmp_path / "dhclient.sh"
    script.write_text(f'#!/bin/sh\necho "$reason ip6=$new_ip6_address" >> {out}\n')
    script.chmod(0o755)
    proc = cli.popen([dhclient, "-6", "-d", "-1", "-D", "LL", "-sf", str(script), "-lf",
                      str(tmp_path / "d6.leases"), "-pf", str(tmp_path / "d6.pid"), ifc],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "BOUND6" not in (out.read_text() if out.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            assert serve.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
    finally:
        lab.stop(proc)
    return out.read_text()


@pytest.mark.fuzz
def test_fuzzed_dhcp6_server_still_answers_dhclient(lab: Lab, tmp_path: Path) -> None:
    """fuzz_cases() mutated messages to the running server (unicast and multicast), then
    a real dhclient -6 still gets its address, and the log has no traceback."""
    cli, ifc, log, serve = serve_dhcp6(lab, tmp_path)
    rng = random.Random(22)
    n = fuzz_cases()

    def blast() -> None:
        idx = socket.if_nametoindex(ifc)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            for i in range(n):
                dst = ("ff02::1:2", 547, 0, idx) if i % 2 else ("2001:db8:18::1", 547, 0, 0)
                try:
                    s.sendto(mutated(rng, SEEDS), dst)
                except OSError:
                    time.sleep(0.01)  # ENOBUFS: let the queue drain
                if i % 200 == 0:
                    time.sleep(0.005)

    in_netns(cli.name, blast, timeout=300)
    assert serve.poll() is None, log.read_text()[-2000:]
    deadline = time.monotonic() + 20  # the server got them: it answered some
    while log.read_text().count("dhcp6 ADVERTISE") < 10:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    assert "BOUND6 ip6=2001:db8:18::11" in dhclient6(lab, cli, ifc, tmp_path, log, serve)
    assert "Traceback" not in log.read_text()


def test_dhclient6_gets_its_inventory_address(lab: Lab, tmp_path: Path) -> None:
    cli, ifc, log, serve = serve_dhcp6(lab, tmp_path)
    assert "BOUND6 ip6=2001:db8:18::11" in dhclient6(lab, cli, ifc, tmp_path, log, serve)
    assert "dhcp6 REPLY 2001:db8:18::11 host=w1 mac=52:54:00:00:01:01" in log.read_text()
