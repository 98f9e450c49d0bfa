"""The TFTP data path's CPU per block, without wake-ups: a figure load barely moves.

A storm's wall time on this shared machine depends on who else runs; its CPU per
MiB less so, but it still mixes the data path's own cost with the scheduler's (a
sleep and a wake-up per block on each side). This measures the data path alone:
``_Session._send_file`` (the loop every transfer runs in its child) in this
process, lock-step at blksize 1468, against a loopback UDP socket in which every
ACK of the transfer was queued before it starts, so no receive ever sleeps. What
is left per block is the Python loop, one ``send`` and one ``recv_into``: the
part of a transfer's cost that is dsas's own (tftpd-hpa's loop in C costs well
under a microsecond besides its system calls).

    python -m bench tftploop [--transfers N]

Prints the median and the minimum of CPU-s per block over N transfers of 181
blocks (one read-ahead refill each). To compare two revisions, run it in each.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from provision.policy.boottree import BootFile
from provision.services import tftp_session as ts

BLKSIZE = 1468
BLOCKS = 181  # blocks per transfer: the last is short


def one_transfer(path: Path) -> float:
    """CPU-s per block of one lock-step transfer whose ACKs are all queued already."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = ts._LazyData(BootFile(path=path.name, size=path.stat().st_size, mtime=0.0,
                                 fs_path=str(path)), False)
    try:
        for s in (srv, cli):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        srv.bind(("127.0.0.1", 0))
        cli.bind(("127.0.0.1", 0))
        cli.connect(srv.getsockname())
        for n in range(1, BLOCKS + 1):
            cli.send(ts.codec.HEADER.pack(ts.codec.OP_ACK, n))
        h = SimpleNamespace(_get_listener=lambda: srv, _peer=cli.getsockname(),
                            _response_data=data, _active=None, _request=None)
        session = ts._Session(h, ts.TftpSettings(busy_poll=0))  # type: ignore[arg-type]
        session.neg = SimpleNamespace(blksize=BLKSIZE, windowsize=1)  # type: ignore[assignment]
        session.rto_max, session.give_up = 1.0, 5.0
        t0 = time.process_time()
        out = session._send_file(BLKSIZE, 1)
        cpu = time.process_time() - t0
        if out["result"] != "ok":
            raise SystemExit(f"bench tftploop: the transfer ended {out}")
        return cpu / BLOCKS
    finally:
        data.close()
        srv.close()
        cli.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench tftploop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transfers", type=int, default=300)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dsas-bench-tftploop-") as tmp:
        path = Path(tmp) / "file.bin"
        path.write_bytes(os.urandom(BLKSIZE * (BLOCKS - 1) + 100))
        runs = [one_transfer(path) for _ in range(args.transfers)]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"TFTP data path, lock-step, blksize {BLKSIZE}, ACKs queued (no wake-ups): "
          f"{1e6 * statistics.median(runs):.2f} us CPU per block (median of "
          f"{args.transfers} transfers of {BLOCKS} blocks; min {1e6 * min(runs):.2f}); "
          f"load {load}")
    return 0
