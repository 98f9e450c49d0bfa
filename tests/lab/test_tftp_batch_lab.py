"""The batched TFTP engine (``provision.services.tftp_batch``) against real clients.

`dsas serve --tftp-batch-from 0` sends every lock-step octet transfer of a file on
disk to the engine, so each test here runs on it (``dsas_tftp_batched_transfers_total``
says so): curl at two block sizes and tftp-hpa get every byte, at once and on one
engine socket; OVMF's size probe, a client that vanishes, duplicate ACKs and a
datagram from a port with no transfer get what a forked transfer gives them; an
engine killed mid-transfer loses only its own transfers (counted) and the next
ones are forked; ``--no-tftp-batch`` runs none on it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from lab.testing import Lab
from tests.support.bootfiles_lab import SRV, Setup, fetch_at_once, hold_from, start_lab, wait_metric

FILES = {
    "a.bin": os.urandom(700_001),
    "b.bin": os.urandom(1468 * 400),  # ends on a block boundary: an empty final block
    "c.bin": os.urandom(512 * 1300),
    "big.bin": os.urandom(4 << 20),
}
BATCH_ALL = ("--tftp-batch-from", "0", "--tftp-max-per-client", "64")


def fetch(env: Setup, tmp: Path, jobs: list[tuple[str, list[str]]]) -> dict[str, str]:
    return fetch_at_once(env, tmp, jobs, timeout=120)


CURL = ["curl", "-sS", "--max-time", "100"]
MIXED = [(name, argv) for name in sorted(FILES) for argv in (
    [*CURL, "--tftp-blksize", "1468"], [*CURL, "--tftp-blksize", "512"],
    ["tftp", SRV, "-m", "octet", "-c", "get"])]


def test_every_client_gets_every_byte_from_the_engine(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES), flags=BATCH_ALL)
        assert fetch(env, tmp_path, MIXED) == {}
        n = len(MIXED)
        assert wait_metric(env, 'dsas_tftp_transfers_total{result="ok"}', n) == n
        assert env.metric("dsas_tftp_batched_transfers_total") == n
        assert env.metric("dsas_tftp_spawns_total") == 0  # no process forked for them
        assert env.metric("dsas_tftp_bytes_total") == sum(len(FILES[f]) for f, _ in MIXED)
        assert env.metric("dsas_tftp_active_transfers") == 0


def test_probe_vanish_dupacks_and_strays_on_the_engine(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES),
                        flags=(*BATCH_ALL, "--tftp-timeout", "2"))
        # OVMF: tsize, then ERROR 8 after the OACK: a probe, not a failure
        assert env.probe("probe", SRV, "a.bin", "--opt", "tsize=0")["probed"]
        assert wait_metric(env, 'dsas_tftp_transfers_total{result="probe"}', 1) == 1
        # 19 blocks acknowledged, then silence: failed after --tftp-timeout, 19 x 512 bytes
        t0 = time.monotonic()
        assert env.probe("vanish", SRV, "big.bin", "--acks", "19")["vanished_after"] == 20
        assert wait_metric(env, 'dsas_tftp_transfers_total{result="failed"}', 1) == 1
        assert time.monotonic() - t0 < 2 + 5  # the give-up time, plus slack
        assert env.metric('dsas_tftp_errors_total{reason="timeout"}') == 1
        assert env.metric("dsas_tftp_bytes_total") == 19 * 512
        assert env.metric("dsas_tftp_retransmits_total") > 0  # block 20, on the timer
        # 2,000 duplicate ACK 0 in lock-step: each ignored; block 1 only on the timer
        r = env.probe("dupacks", SRV, "big.bin", "--opt", "blksize=1468", "--count", "2000",
                      timeout=60)
        assert r["first"] == 6, r  # the OACK
        assert r["data_packets"] <= 10, r  # 0.1 + 0.2 + 0.4 + 0.8 s of backoff in 2 s
        # a datagram to the engine's port from a port without a transfer: dropped,
        # counted, and the transfer it came in the middle of is whole
        r = env.probe("junk", SRV, "c.bin")
        assert r["sha256"] == env.sha("c.bin") and r["junk"] > 0, r
        assert wait_metric(env, 'dsas_tftp_errors_total{reason="stray"}', 1) == 1
        assert env.metric("dsas_tftp_batched_transfers_total") == 4
        assert env.metric("dsas_tftp_spawns_total") == 0


def serve_children(env: Setup) -> list[int]:
    """The pids whose parent is the `dsas serve` of ``env`` (its serve.pid)."""
    serve = int(json.loads((env.state / "serve.pid").read_text())["pid"])
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == serve and state != "Z":  # (a transfer not reaped yet: gone)
                kids.append(int(d))
    return kids


def test_a_killed_engine_loses_only_its_transfers(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES), flags=BATCH_ALL)
        held = env.cli.popen(["python3", "-c", "import socket,time\n"
                              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                              f"s.sendto(b'\\x00\\x01big.bin\\x00octet\\x00',('{SRV}',69))\n"
                              "s.recv(600); time.sleep(30)"])
        try:
            assert wait_metric(env, "dsas_tftp_batched_transfers_total", 1) == 1
            engines = serve_children(env)
            assert len(engines) == 1, engines  # the engine; no transfer process
            os.kill(engines[0], signal.SIGKILL)
            assert wait_metric(env, 'dsas_tftp_errors_total{reason="worker_died"}', 1) == 1
            assert env.metric("dsas_tftp_active_transfers") == 0
            # the next transfers are forked, and whole
            assert fetch(env, tmp_path, MIXED[:3]) == {}
            assert env.metric("dsas_tftp_spawns_total") == 3
            assert env.metric("dsas_tftp_batched_transfers_total") == 1
        finally:
            lab.stop(held)


def test_engine_out_of_descriptors_refuses_and_frees_every_slot(tmp_path: Path) -> None:
    """RLIMIT_NOFILE 40 for the server, 30 transfers held from 6 addresses: every
    request is answered (DATA, or "busy" for a job whose file the engine had no
    descriptor for, counted as such), every slot is free again after --tftp-timeout,
    and a later fetch is whole."""
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES),
                        flags=(*BATCH_ALL, "--tftp-timeout", "3"), nofile=40)
        server = lab.procs[-1]
        answered, busy = hold_from(env, "big.bin", [f"198.18.4.{20 + i}" for i in range(6)], 5)
        assert answered + busy == 30, (answered, busy)
        assert wait_metric(env, 'dsas_tftp_transfers_total{result="failed"}', 30, 3 + 10) == 30
        assert env.metric("dsas_tftp_active_transfers") == 0
        assert env.metric('dsas_tftp_errors_total{reason="descriptors"}') == busy
        assert fetch(env, tmp_path, MIXED[:3]) == {}
        assert server.poll() is None, "the server exited"
        assert "Traceback" not in (env.root.parent / "serve.log").read_text(errors="replace")
        print(f"engine at RLIMIT_NOFILE 40: {answered} held, {busy} refused busy")


def test_no_tftp_batch_forks_every_transfer(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files=dict(FILES),
                        flags=("--no-tftp-batch", "--tftp-max-per-client", "64"))
        assert fetch(env, tmp_path, MIXED[:6]) == {}
        assert env.metric("dsas_tftp_batched_transfers_total") == 0
        assert env.metric("dsas_tftp_spawns_total") == 6
        assert serve_children(env) == []  # no engine
