"""Fuzz the running DHCP service with packets that reach its option parser: a valid
header and magic cookie, then an option stream built from real options, PADs,
overload and damage (random bytes almost never hold the cookie). Afterwards a real
client must still get its OFFER and nothing may have raised (issue 24 item 4)."""

from __future__ import annotations

import random

import pytest

from lab.testing import wait_for
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import OPTIONS_START, encode
from tests.support.dhcp_served import Served
from tests.support.dhcp_support import IPXE_ROM, W1_MAC, client_packet, raw_packet
from tests.support.fuzzing import fuzz_cases

pytestmark = pytest.mark.fuzz

CODES = [1, 3, 6, 12, 43, 50, 51, 52, 53, 54, 55, 57, 60, 61, 77, 82, 93, 94, 97, 175, 200]


def _option(rnd: random.Random) -> bytes:
    code = rnd.choice(CODES)
    if code == 53:
        value = bytes((rnd.randint(0, 10),))
    elif code == 52:
        value = bytes((rnd.randint(0, 4),))
    elif code in (82, 175):
        value = o.build_tlv({rnd.randint(1, 254): rnd.randbytes(rnd.randint(0, 8))
                             for _ in range(rnd.randint(0, 3))})
    else:
        value = rnd.randbytes(rnd.choice((0, 1, 2, 4, 6, 16, 17, rnd.randint(0, 255))))
    return bytes((code, len(value))) + value


def fuzzed(rnd: random.Random) -> bytes:
    stream = bytearray(b"\x35\x01\x01") if rnd.random() < 0.8 else bytearray()
    for _ in range(rnd.randint(0, 12)):
        stream += b"\x00" * rnd.randint(1, 3) if rnd.random() < 0.2 else _option(rnd)
    if rnd.random() < 0.9:
        stream.append(255)
    fields = [rnd.randbytes(64) if rnd.random() < 0.3 else b"",
              rnd.randbytes(128) if rnd.random() < 0.3 else b""]
    data = bytearray(raw_packet(bytes(stream), sname=fields[0], file=fields[1]))
    for _ in range(rnd.choice((0, 0, 1, 2, 4)) if len(data) > OPTIONS_START else 0):
        data[rnd.randrange(OPTIONS_START, len(data))] = rnd.randrange(256)  # damage
    if rnd.random() < 0.2:
        data = data[: rnd.randint(OPTIONS_START, len(data))]
    return bytes(data)


def test_fuzzed_option_streams_never_break_the_service(served: Served) -> None:
    rnd = random.Random(24)
    n = fuzz_cases()
    m = served.ctx.metrics
    for i in range(n):
        served.send(fuzzed(rnd))
        if i % 200 == 199:  # let the service keep up: its socket buffer is bounded
            probe = client_packet(o.DISCOVER, W1_MAC, broadcast=True)
            served.send(encode(probe))
            assert served.replies(probe.xid, wait=10), f"no OFFER after {i + 1} cases"
    good = client_packet(o.DISCOVER, W1_MAC, broadcast=True, extra=IPXE_ROM)
    served.send(encode(good))
    offers = served.replies(good.xid, wait=10)
    assert offers and str(offers[0].yiaddr) == "198.18.0.11"
    wait_for(lambda: m.get("dsas_dhcp_received_total", type="DISCOVER") > 0, 10, "counters")
    # The cases reached the option parser: its errors, not the header's, were counted.
    reached = [k for k in ("option_overrun", "bad_option_length", "unknown_message_type",
                           "bad_overload", "bad_suboption")
               if m.get("dsas_dhcp_dropped_total", reason=k) > 0]
    assert len(reached) >= 4, reached
    assert m.get("dsas_dhcp_dropped_total", reason="internal_error") == 0
    assert m.get("dsas_dhcp_dropped_total", reason="encode_error") == 0
    assert served.svc.alive()
