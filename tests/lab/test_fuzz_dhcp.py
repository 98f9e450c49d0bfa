"""DHCP fuzzing of a running `dsas serve` (marker ``fuzz``; issue 13): ``fuzz_cases()``
datagrams built on a valid BOOTP header, the magic cookie and an option stream (random
codes and lengths, PAD bytes between options, option 52 overloading 'file' and 'sname',
truncations, oversized datagrams), plus some random bytes, sent from a lab namespace.
Afterwards a real udhcpc still gets its lease and the log has no traceback."""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import Lab, Netns
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import MAGIC_COOKIE, DhcpDecodeError, decode
from tests.support.dhcp_lab import Server, set_mac, udhcpc_once
from tests.support.dhcp_support import OLD_MAC, UNKNOWN_MAC, W1_MAC, W2_MAC, mac_bytes
from tests.support.fuzzing import fuzz_cases
from tests.support.hostile import dhcpclient_socket, discover, drain, log_problems, send_broadcast

pytestmark = pytest.mark.fuzz

HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
CHUNK = 250  # cases between two liveness probes (paces the sender to the server)
MACS = [mac_bytes(m) for m in (W1_MAC, W2_MAC, OLD_MAC, UNKNOWN_MAC)]
# Only lab addresses (or none) in address fields: replies go to giaddr/ciaddr.
ADDRESSES = [b"\0\0\0\0", bytes([198, 18, 0, 1]), bytes([198, 18, 0, 11]),
             bytes([198, 18, 1, 1]), bytes([198, 18, 0, 200]), bytes([198, 18, 2, 3]),
             bytes([198, 19, 255, 255])]
CODES = [1, 3, 6, 12, 43, 50, 51, 54, 55, 57, 60, 61, 66, 67, 77, 82, 93, 94, 97, 116,
         118, 119, 121, 124, 125, 175, 210, 211]


# Options with a fixed length (protocol.dhcp_options._SHAPES): mostly given that length,
# so that most cases get past the decoder into the policy.
FIXED = {1: 4, 3: 4, 6: 4, 28: 4, 50: 4, 51: 4, 54: 4, 57: 2, 58: 4, 59: 4, 93: 2, 94: 3}


def _address(rng: random.Random) -> bytes:
    if rng.random() < 0.9:
        return rng.choice(ADDRESSES)
    return bytes([198, 18 + rng.randrange(2), rng.randrange(256), rng.randrange(256)])


def _value(rng: random.Random, code: int) -> bytes:
    r = rng.random()
    if code == o.MESSAGE_TYPE and r < 0.97:
        return bytes([rng.choice([1, 1, 1, 3, 3, 4, 7, 8, 2, 5, 6, 0, 9, 18, 255])])
    if code in (o.REQUESTED_IP, o.SERVER_ID) and r < 0.8:
        return _address(rng)
    if code == o.MAX_MESSAGE_SIZE and r < 0.8:
        return struct.pack("!H", rng.choice([0, 1, 300, 576, 1500, 65535, rng.randrange(65536)]))
    if code == o.CLIENT_ARCH and r < 0.8:
        return struct.pack("!H", rng.randrange(12)) * rng.choice([1, 1, 2])
    if code in (o.VENDOR_CLASS, o.HOST_NAME) and r < 0.5:
        return rng.choice([b"PXEClient:Arch:00000:UNDI:002001", b"iPXE", b"x\nCRITICAL y",
                           b"\x1b[2J\x00\xff", b"udhcp 1.36"])
    if code in (o.VENDOR_SPECIFIC, o.IPXE_ENCAP, o.RELAY_AGENT_INFO, o.USER_CLASS) and r < 0.6:
        return _tlv(rng, rng.randint(0, 6))  # nested TLVs, possibly broken
    if code == o.OVERLOAD:
        return bytes([rng.choice([1, 2, 3, 0, 4, 255])]) * rng.choice([1, 1, 1, 0, 2])
    if code in FIXED and r < 0.9:
        return rng.randbytes(FIXED[code])
    return rng.randbytes(rng.choice([0, 1, 2, 4, 6, 16, rng.randint(0, 255)]))


def _tlv(rng: random.Random, n: int) -> bytes:
    out = b""
    for _ in range(n):
        data = rng.randbytes(rng.randint(0, 20))
        length = len(data) if rng.random() < 0.85 else rng.randrange(256)
        out += bytes([rng.randrange(256), length]) + data
    return out


def _options(rng: random.Random, n: int, message_type: bool = True) -> bytes:
    out = bytearray()
    codes = ([o.MESSAGE_TYPE] if message_type and rng.random() < 0.9 else [])
    codes += [rng.choice(CODES) if rng.random() < 0.8 else rng.randint(1, 254)
              for _ in range(n)]
    for code in codes:
        if rng.random() < 0.15:
            out += b"\0" * rng.randint(1, 5)  # PAD between options
        value = _value(rng, code)
        length = len(value) if rng.random() < 0.985 else rng.randrange(256)
        out += bytes([code, length]) + value[:255]
    if rng.random() < 0.9:
        out.append(255)  # END (sometimes missing)
        if rng.random() < 0.05:
            out += rng.randbytes(rng.randint(1, 40))  # junk after END
    return bytes(out)


def _field(rng: random.Random, size: int, overloaded: bool) -> bytes:
    if overloaded and rng.random() < 0.9:
        data = _options(rng, rng.randint(0, 6), message_type=rng.random() < 0.2)
    else:
        data = rng.choice([b"", b"", b"pxelinux.0", rng.randbytes(rng.randint(0, size))])
    return data[:size].ljust(size, b"\0")


def dhcp_case(rng: random.Random) -> bytes:
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(0, 700))  # no structure at all
    op = 1 if rng.random() < 0.9 else rng.choice([0, 2, 3, rng.randrange(256)])
    htype, hlen = (1, 6) if rng.random() < 0.93 else (rng.randrange(256), rng.randrange(256))
    mac = rng.choice(MACS) if rng.random() < 0.4 else rng.randbytes(6)
    chaddr = (mac + (b"\0" * 10 if rng.random() < 0.9 else rng.randbytes(10)))
    overload = rng.random() < 0.15
    options = _options(rng, rng.randint(0, 14))
    if overload:
        options = bytes([o.OVERLOAD, 1, rng.choice([1, 2, 3, 3, 0, 9])]) + options
    header = HEADER.pack(op, htype, hlen, rng.randrange(256) if rng.random() < 0.05 else 0,
                         rng.getrandbits(32), rng.randrange(8), rng.choice([0, 0x8000, 0xFFFF]),
                         _address(rng), _address(rng), _address(rng), _address(rng), chaddr,
                         _field(rng, 64, overload), _field(rng, 128, overload))
    cookie = MAGIC_COOKIE if rng.random() < 0.97 else rng.randbytes(4)
    data = header + cookie + options
    r = rng.random()
    if r < 0.08:
        data = data[: rng.randrange(len(data) + 1)]  # truncated anywhere
    elif r < 0.11:
        data = data.ljust(rng.randint(1501, 4200), b"\0")  # oversized
    return data


@pytest.fixture
def pair(lab: Lab, tmp_path: Path) -> Iterator[tuple[Server, Netns, str]]:
    srv, cli = lab.netns("dsrv"), lab.netns("dcli")
    sif, cif = lab.veth(srv, cli, "198.18.0.1/24", None)
    server = Server(lab, srv, sif, tmp_path, ["--discovery"])
    yield server, cli, cif
    server.stop()


def _probe(sock: socket.socket, tries: int = 3, wait: float = 3) -> bool:
    """A valid DISCOVER for w1, sent up to ``tries`` times (a full socket buffer may drop a
    datagram); True when its OFFER comes (everything sent before it has been read by then:
    one socket, read in order). Other replies are read and dropped."""
    for _ in range(tries):
        data = discover(W1_MAC)
        xid = data[4:8]
        send_broadcast(sock, data)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:  # bounded: wait
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            reply = sock.recv(4096)
            if reply[4:8] != xid:
                continue
            try:
                if decode(reply).message_type == o.OFFER:
                    return True
            except DhcpDecodeError:
                continue
    return False


def test_fuzzed_dhcp_datagrams_leave_the_server_serving(
        pair: tuple[Server, Netns, str], tmp_path: Path) -> None:
    server, cli, cif = pair
    server.start()
    n = fuzz_cases()
    rng = random.Random(0xD4C9)
    with dhcpclient_socket(cli.name, cif) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for i in range(n):
            try:
                send_broadcast(sock, dhcp_case(rng))
            except OSError as e:  # e.g. EMSGSIZE for a datagram over 64 KiB: never made
                pytest.fail(f"case {i} not sent: {e}")
            drain(sock)  # the replies: a full buffer would drop the probe's
            if (i + 1) % CHUNK == 0 or i == n - 1:
                assert _probe(sock), f"no OFFER for w1 after case {i}:\n{server.log()[-4000:]}"
                assert server.proc is not None and server.proc.poll() is None
    set_mac(cli, cif, W1_MAC)
    lease = udhcpc_once(cli, cif, tmp_path)
    assert lease is not None and lease["ip"] == "198.18.0.11", server.log()[-4000:]
    server.stop()
    log = server.log()
    assert "Traceback" not in log and "policy failed" not in log, log[-6000:]
    assert [ln for ln in log_problems(tmp_path / "serve.log") if "Traceback" in ln] == []
    reasons = Counter(re.findall(r"drop reason=(\w+)", log))
    print(f"{n} DHCP cases sent; drops logged: {dict(reasons.most_common())}")
