"""Abusive TFTP clients against `dsas serve --only tftp,http` in a namespace (issue 13).

Each test reproduces one attack or fault with a raw client (``tests.support.tftp_probe``)
or tftp-hpa and checks that TFTP degrades for the abuser only: duplicate ACKs are
not amplified, a client's ``timeout 255`` and its many requests hold no slot
beyond the server's own limit, a failed transfer counts the bytes acknowledged,
and descriptor exhaustion refuses requests without stopping the service.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from lab.testing import Lab
from tests.support.bootfiles_lab import CLI, SRV, Setup, hold_from, sha_of, start_lab, wait_metric

ATTACKER = "198.18.4.12"  # a second address in the client namespace


def log_of(env: Setup) -> str:
    return (env.root.parent / "serve.log").read_text(errors="replace")


def test_duplicate_acks_are_not_amplified(tmp_path: Path) -> None:
    """5,000 duplicate ACK 0 with windowsize 64: the window goes again once, then only
    on the retransmission timer (backoff) until the give-up time, not per duplicate
    (before: 20,608 blocks, ~30 MB for 20 KB of ACKs)."""
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files={"big.bin": os.urandom(8 << 20)},
                        flags=("--tftp-timeout", "2", "--tftp-busy-poll", "0"))
        r = env.probe("dupacks", SRV, "big.bin", "--opt", "blksize=1468", "--opt",
                      "windowsize=64", "--count", "5000", timeout=150)
        assert r["first"] == 6  # the OACK
        # The transfer ends failed (no progress for 2 s): then every count is final.
        assert wait_metric(env, 'dsas_tftp_transfers_total{result="failed"}', 1, 10) == 1
        retransmits = env.metric("dsas_tftp_retransmits_total")
        # 64 first, 64 for the first duplicate, 64 per timer expiry: 0.1 + 0.2 + 0.4 +
        # 0.8 + 1 s of backoff fit in 2 s, so at most 5 of them; 10 windows is generous.
        bound = 64 * 10
        assert r["data_packets"] <= bound, r
        assert retransmits <= bound - 64, retransmits
        print(f"dup-ACK flood: {r['data_packets']} DATA packets received, "
              f"{retransmits:.0f} retransmitted")


def test_failed_transfer_counts_acknowledged_bytes(tmp_path: Path) -> None:
    """A client that acknowledges 19 blocks and vanishes: 19 * 512 bytes are counted
    (before: 0), in the transfer's log line and in dsas_tftp_bytes_total."""
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files={"big.bin": os.urandom(1 << 20)},
                        flags=("--tftp-timeout", "1", "--tftp-busy-poll", "0"))
        r = env.probe("vanish", SRV, "big.bin", "--acks", "19")
        assert r["vanished_after"] == 20
        assert wait_metric(env, 'dsas_tftp_transfers_total{result="failed"}', 1, 10) == 1
        assert env.metric("dsas_tftp_bytes_total") == 19 * 512
        assert re.search(r"tftp: failed big.bin to .*: 9728 bytes", log_of(env))


def test_timeout_option_and_one_address_cannot_hold_every_slot(tmp_path: Path) -> None:
    """One address, 20 small requests asking ``timeout 255``, never acknowledged: the
    option is declined (above --tftp-timeout), the address gets 8 transfers (the
    default --tftp-max-per-client) and "busy" for the rest, another client is served,
    and the held slots are free again within --tftp-timeout (before: all 16 slots
    held for about 256 s, tftp-hpa got "busy")."""
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files={"small.bin": os.urandom(300),
                                              "kernel": os.urandom(300_000)},
                        flags=("--tftp-max-transfers", "16", "--tftp-timeout", "2"))
        env.cli.run(["ip", "addr", "add", f"{ATTACKER}/24", "dev", env.cli_if])
        t0 = time.monotonic()
        r = env.probe("hold", SRV, "small.bin", "--opt", "timeout=255", "--opt", "tsize=0",
                      "--requests", "20", "--bind", ATTACKER)
        assert r["answered"] == 8 and r["busy"] == 12, r
        assert all("timeout" not in o for o in r["oacks"]), r  # declined, not honoured
        out = tmp_path / "kernel.out"
        got = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "kernel", str(out)],
                          timeout=30, check=False)
        assert not got.stderr and sha_of(out) == env.sha("kernel"), got.stdout + got.stderr
        assert env.metric('dsas_tftp_errors_total{reason="busy_client"}') == 12
        # The 8 held transfers give up 2 s after their OACK, whatever the option said.
        deadline = t0 + 2 + 3  # the limit, plus slack for a loaded host
        active = env.metric("dsas_tftp_active_transfers")
        while active and time.monotonic() < deadline:
            time.sleep(0.1)
            active = env.metric("dsas_tftp_active_transfers")
        assert active == 0, f"{active} transfers still held after {deadline - t0:.0f} s"
        assert env.metric('dsas_tftp_transfers_total{result="failed"}') == 8
        assert CLI != ATTACKER


def test_descriptor_exhaustion_refuses_and_the_service_stays(tmp_path: Path) -> None:
    """The server under RLIMIT_NOFILE 40 (14 in use when idle), 30 transfers left
    hanging from 6 addresses: those it has no descriptors for are refused "busy",
    counted and logged once; the service and the process stay up, and once the
    hanging transfers gave up, tftp-hpa fetches a file byte-exact (before: the
    listener died on EMFILE and the supervisor stopped everything)."""
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files={"big.bin": os.urandom(1 << 20),
                                              "kernel": os.urandom(300_000)},
                        flags=("--tftp-timeout", "3", "--tftp-busy-poll", "0",
                               "--no-tftp-batch"), nofile=40)  # (the engine: test_tftp_batch)
        server = lab.procs[-1]
        answered, busy = hold_from(env, "big.bin", [f"198.18.4.{20 + i}" for i in range(6)], 5)
        assert server.poll() is None, "the server exited"
        assert busy > 0 and answered + busy == 30, (answered, busy)
        # Every held transfer gives up after 3 s; its report is logged.
        deadline = time.monotonic() + 3 + 10
        while time.monotonic() < deadline:
            if len(re.findall(r"tftp: failed big.bin", log_of(env))) >= answered:
                break
            time.sleep(0.2)
        assert len(re.findall(r"tftp: failed big.bin", log_of(env))) == answered
        assert server.poll() is None, "the server exited"
        out = tmp_path / "kernel.out"
        got = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "kernel", str(out)],
                          timeout=30, check=False)
        assert not got.stderr and sha_of(out) == env.sha("kernel"), got.stdout + got.stderr
        assert env.metric('dsas_tftp_errors_total{reason="descriptors"}') >= busy
        log = log_of(env)
        assert len(re.findall(r"tftp: out of descriptors", log)) == 1, log[-3000:]
        assert "Traceback" not in log
