"""The TFTP transfer's wait for an ACK: busy polling first, then a timed sleep (pure unit).

A ``_Session`` on a local datagram socket pair (AF_UNIX, no network): the shared
live-transfer count decides whether it polls, a slow client turns polling off
after ``POLL_MISSES`` empty polls, and the retransmission timer still runs out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from provision.services.tftp import TftpSettings, _Session

ACK = b"\x00\x04\x00\x01"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    tag = f"dsas-test-poll-{os.getpid()}-{id(object())}"
    a, b = (socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2))
    a.bind(f"\0{tag}-a")
    b.bind(f"\0{tag}-b")
    yield a, b
    a.close()
    b.close()


def session(sock: socket.socket, peer: str, active: int, busy_poll: int = 50) -> _Session:
    """``active``: the live-transfer count the listener shares (0 polls even on 1 CPU)."""
    count = memoryview(bytearray(4)).cast("i")
    count[0] = active
    h = SimpleNamespace(_get_listener=lambda: sock, _peer=peer, _response_data=None,
                        _active=count)
    s = _Session(h, TftpSettings(busy_poll=busy_poll))  # type: ignore[arg-type]
    s.spin, s.misses, s.rto = busy_poll * 1000, 0, 0.01
    return s


def test_an_ack_already_there_is_caught_by_polling(pair) -> None:
    a, b = pair
    s = session(a, b.getsockname(), active=0)
    b.sendto(ACK, a.getsockname())
    assert s._wait() == 4 and bytes(s.ack[:4]) == ACK
    assert s.polled == 1 and s.timeo == -1.0  # never slept: the timer was not even set


def test_as_many_transfers_as_cpus_sleep_instead(pair) -> None:
    a, b = pair
    s = session(a, b.getsockname(), active=_Session.NCPU)
    b.sendto(ACK, a.getsockname())
    assert s._wait() == 4
    assert s.polled == 0 and s.timeo == 0.01  # the blocking receive got it


def test_busy_poll_0_never_polls(pair) -> None:
    a, b = pair
    s = session(a, b.getsockname(), active=0, busy_poll=0)
    b.sendto(ACK, a.getsockname())
    assert s._wait() == 4 and s.polled == 0


def test_silence_times_out_and_a_slow_client_stops_polling(pair) -> None:
    a, b = pair
    s = session(a, b.getsockname(), active=0)
    for i in range(_Session.POLL_MISSES):
        assert s.spin
        assert s._wait() == -1  # the poll found nothing, then the timer ran out
        assert s.misses == i + 1
    assert s.spin == 0  # from now on it only sleeps
    b.sendto(ACK, a.getsockname())
    assert s._wait() == 4 and s.polled == 0
