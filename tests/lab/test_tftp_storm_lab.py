"""Many TFTP transfers at once against `dsas serve --only tftp,http` (issue 20).

Real clients (curl at blksize 1468 and 512, tftp-hpa at 512) fetch files larger
than the transfer's read-ahead buffer (256 KiB: refills, block numbers, a file
that ends on a block boundary), all at once, so that every transfer's data path
runs while the others do: every client gets its file byte for byte. Then the
same with 5% of the ACKs lost on their way to the server: the retransmission
timer, which the data path now samples only every 16 blocks, repairs each loss
(all but a lost final ACK, which nothing can repair). Past the CPU count the
transfers run on the batched engine (``tftp_batch``), so both data paths are here.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from lab.testing import Lab
from tests.support.bootfiles_lab import SRV, Setup, fetch_at_once, start_lab

FILES = {
    "a.bin": os.urandom(700_001),
    "b.bin": os.urandom(1468 * 400),  # ends on a block boundary: an empty final block
    "c.bin": os.urandom(512 * 1300),  # the same at blksize 512
    "d.bin": os.urandom(300_007),
}


def clients(n: int) -> list[tuple[str, list[str]]]:
    """``n`` (file, argv) pairs, each client kind in turn, the files in turn."""
    kinds = (["curl", "-sS", "--max-time", "120", "--tftp-blksize", "1468"],
             ["curl", "-sS", "--max-time", "120", "--tftp-blksize", "512"],
             ["tftp", SRV, "-m", "octet", "-c", "get"])
    out = []
    for i in range(n):
        name = sorted(FILES)[i % len(FILES)]
        kind = kinds[i % len(kinds)]
        out.append((name, kind if kind[0] == "tftp" else [*kind, f"tftp://{SRV}/{name}"]))
    return out


def fetch_all(env: Setup, tmp: Path, n: int) -> dict[str, str]:
    """Run ``n`` clients at once (bounded waits); output file -> what is wrong with it."""
    return fetch_at_once(env, tmp, clients(n))


def outcomes(env: Setup, n: int) -> dict[str, float]:
    """Transfers counted by result, once ``n`` have reported (bounded: 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        got = {r: env.metric(f'dsas_tftp_transfers_total{{result="{r}"}}')
               for r in ("ok", "failed", "aborted")}
        if sum(got.values()) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_forty_concurrent_transfers_get_every_byte(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES),
                        flags=("--tftp-max-per-client", "64"))
        assert fetch_all(env, tmp_path, 40) == {}
        assert outcomes(env, 40) == {"ok": 40, "failed": 0, "aborted": 0}
        # past the CPU count, the batched engine took them (tftp_batch), the first forked
        batched = env.metric("dsas_tftp_batched_transfers_total")
        assert batched >= 40 - 2 * len(os.sched_getaffinity(0)), batched
        assert env.metric("dsas_tftp_spawns_total") == 40 - batched


def lose_acks(env: Setup, percent: int) -> None:
    """Drop ``percent``% of the UDP datagrams reaching the server on a transfer's port
    (not 69: the requests get through), i.e. the clients' ACKs, on a lossless wire."""
    if not shutil.which("iptables-legacy"):
        pytest.fail("iptables-legacy is missing (Debian package iptables)", pytrace=False)
    env.srv.run(["iptables-legacy", "-A", "INPUT", "-i", env.srv_if, "-p", "udp", "!",
                 "--dport", "69", "-m", "statistic", "--mode", "random", "--probability",
                 f"{percent / 100:.2f}", "-j", "DROP"])


def test_lost_acks_under_concurrency_are_retransmitted(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES),
                        flags=("--tftp-max-per-client", "64"))
        lose_acks(env, 5)
        assert fetch_all(env, tmp_path, 16) == {}
        got = outcomes(env, 16)
        assert env.metric("dsas_tftp_retransmits_total") > 0
        assert env.metric("dsas_tftp_batched_transfers_total") > 0
        # A lost *final* ACK cannot be repaired: the client has every byte and is gone
        # (RFC 1350 lets it go), the server resends the last block until it gives up
        # and counts a timeout. Any other loss ends in "ok".
        failed = env.metric('dsas_tftp_errors_total{reason="timeout"}')
        assert got == {"ok": 16 - failed, "failed": failed, "aborted": 0}, got
        assert failed <= 4, got  # ~0.8 expected (16 final ACKs, 5% each)
