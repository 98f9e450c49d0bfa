"""The TFTP data path's block source: read-ahead buffer, refills, EOF edges (pure unit).

A small read-ahead forces refills, so sequential runs, retransmissions that go
back across a refill, and files that end exactly on a block boundary are all
checked against plain slicing of the bytes.
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
from provision.services.tftp import _Blocks, _LazyData


def on_disk(tmp: Path, data: bytes) -> BootFile:
    f = tmp / f"f{len(data)}-{time.monotonic_ns()}"
    f.write_bytes(data)
    return BootFile(path=f.name, size=len(data), mtime=0.0, fs_path=str(f))


def expected(data: bytes, blksize: int, n: int) -> bytes:
    return data[(n - 1) * blksize:n * blksize]


@contextmanager
def blocks_of(bf: BootFile, blksize: int, read_ahead: int,
              netascii: bool = False) -> Iterator[_Blocks]:
    data = _LazyData(bf, netascii)
    b = _Blocks(data, blksize)
    b.buf = memoryview(bytearray(blksize * max(1, read_ahead // blksize)))
    try:
        yield b
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
            assert bytes(b.get(n)) == expected(data, blksize, n), n


def test_a_file_ending_on_a_block_boundary_ends_with_an_empty_block(tmp_path):
    data = os.urandom(512 * 8)
    with blocks_of(on_disk(tmp_path, data), 512, 512 * 4) as b:  # a refill lands at EOF
        assert [len(b.get(n)) for n in range(1, 10)] == [512] * 8 + [0]
    with blocks_of(on_disk(tmp_path, b""), 512, 4096) as b:
        assert len(b.get(1)) == 0


def test_rendered_and_netascii_content_come_from_memory(tmp_path):
    text = b"line one\nline two\r\n" * 100
    mem = BootFile(path="x.cfg", size=len(text), mtime=0.0, data=text)
    with blocks_of(mem, 64, 200) as b:
        assert b"".join(bytes(b.get(n)) for n in range(1, len(text) // 64 + 2)) == text
    wire = netascii_encode(text)
    with blocks_of(on_disk(tmp_path, text), 64, 200, netascii=True) as b:
        assert b"".join(bytes(b.get(n)) for n in range(1, len(wire) // 64 + 2)) == wire
        assert bytes(b.get(3)) == expected(wire, 64, 3)  # back across a refill
