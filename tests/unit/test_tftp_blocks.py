"""The TFTP data path's block source: read-ahead buffer, refills, EOF edges (pure unit).

A small read-ahead forces refills, so sequential runs, retransmissions that go
back across a refill, block numbers that wrap past 65535 and files that end
exactly on a block boundary are all checked against plain slicing of the bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from provision.policy.boottree import BootFile
from provision.protocol.tftp import netascii_encode
from provision.services.tftp import _Blocks, _LazyData, _skip


def on_disk(tmp: Path, data: bytes) -> BootFile:
    f = tmp / f"f{len(data)}-{time.monotonic_ns()}"
    f.write_bytes(data)
    return BootFile(path=f.name, size=len(data), mtime=0.0, fs_path=str(f))


def expected(data: bytes, blksize: int, n: int) -> bytes:
    return data[(n - 1) * blksize:n * blksize]


def block(b: _Blocks, n: int) -> bytes:
    """The data of DATA packet ``n``, after checking its header."""
    pkt = bytes(b.packet(n))
    assert pkt[:4] == bytes([0, 3, (n >> 8) & 0xFF, n & 0xFF]), (n, pkt[:4])
    return pkt[4:]


@contextmanager
def blocks_of(bf: BootFile, blksize: int, read_ahead: int,
              netascii: bool = False) -> Iterator[_Blocks]:
    data = _LazyData(bf, netascii)
    try:
        yield _Blocks(data, blksize, read_ahead)
    finally:
        data.close()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5000), blksize=st.sampled_from([8, 13, 512, 1468]),
       read_ahead=st.integers(1, 3000), order=st.lists(st.integers(1, 700), max_size=40))
def test_any_block_in_any_order_matches_the_bytes(tmp_path_factory, size, blksize, read_ahead,
                                                  order):
    data = os.urandom(size)
    nblocks = size // blksize + 1  # the final block is short (maybe empty)
    with blocks_of(on_disk(tmp_path_factory.mktemp("b"), data), blksize, read_ahead) as b:
        for n in [*range(1, nblocks + 1), *(k % nblocks + 1 for k in order)]:
            assert block(b, n) == expected(data, blksize, n), n


def test_a_file_ending_on_a_block_boundary_ends_with_an_empty_block(tmp_path):
    data = os.urandom(512 * 8)
    with blocks_of(on_disk(tmp_path, data), 512, 512 * 4) as b:  # a refill lands at EOF
        assert [len(block(b, n)) for n in range(1, 10)] == [512] * 8 + [0]
    with blocks_of(on_disk(tmp_path, b""), 512, 4096) as b:
        assert len(block(b, 1)) == 0


def test_rendered_and_netascii_content_come_from_memory(tmp_path):
    text = b"line one\nline two\r\n" * 100
    mem = BootFile(path="x.cfg", size=len(text), mtime=0.0, data=text)
    with blocks_of(mem, 64, 200) as b:
        assert b"".join(block(b, n) for n in range(1, len(text) // 64 + 2)) == text
    wire = netascii_encode(text)
    with blocks_of(on_disk(tmp_path, text), 64, 200, netascii=True) as b:
        assert b"".join(block(b, n) for n in range(1, len(wire) // 64 + 2)) == wire
        assert block(b, 3) == expected(wire, 64, 3)  # back across a refill


def test_block_numbers_wrap_in_the_header(tmp_path):
    data = os.urandom(8 * 65540)
    with blocks_of(on_disk(tmp_path, data), 8, 8 * 1000) as b:
        for n in (65535, 65536, 65537, 65541, 2):
            pkt = bytes(b.packet(n))
            assert pkt[:4] == bytes([0, 3, (n >> 8) & 0xFF, n & 0xFF]) and \
                pkt[4:] == expected(data, 8, n), n


def test_skip_drops_bytes_across_buffers():
    bufs = [memoryview(bytearray(b"abc")), memoryview(bytearray(b"de")), memoryview(b"fgh")]
    assert [bytes(b) for b in _skip(bufs, 4)] == [b"e", b"fgh"]
    assert [bytes(b) for b in _skip(bufs, 5)] == [b"fgh"]
    assert [bytes(b) for b in _skip(bufs, 0)] == [b"abc", b"de", b"fgh"]
    assert _skip(bufs, 8) == []
