"""Where a DHCP exchange's CPU goes, in-process: decode, decide, encode, commit.

    python -m bench dhcpcpu [--clients=5000] [--leases=100000] [--default-gc] [--profile]

No sockets and no threads: the DHCP service's own steps run one after the other for
``--clients`` new machines from a relay (as perfdhcp sends them: DISCOVER, then a
REQUEST for the offered address), against a lease store on disk (sqlite, fsync'd like
the service's group commit, 60 changes per commit). Each step is timed in CPU time
(``time.process_time``), the best of ``REPEAT`` rounds, so the figures move little
with the load of the machine, unlike a rate; the sum is what one 4-way exchange costs
the server before its socket calls and its loop (``bench dhcp`` measures the whole).
The lease table starts with ``--leases`` bound leases (a busy farm's), and the cyclic
GC is tuned as `dsas serve` tunes it (``supervisor.tune_gc``) unless ``--default-gc``:
with Python's defaults its full collections walk the whole table.
``--profile``: also the functions that took the most time (cProfile, one round).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from provision.inventory import loads
from provision.policy.dhcp import Decision, DhcpPolicy, DhcpSettings, Link
from provision.policy.leases import Change, LeaseTable
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import decode, encode, make_packet
from provision.services.base import ServeContext
from provision.services.dhcp import DhcpService
from provision.services.dhcp_batch import Batch, Endpoint
from provision.services.supervisor import tune_gc
from provision.state.leases import LeaseJournal

from .common import machine_cpu
from .dhcp import CLIENT_IP, INVENTORY, PREFIX, SERVER_IP

REPEAT = 5
PER_COMMIT = 60  # lease changes per group commit (a busy server's batches)
PARAMETERS = bytes([1, 28, 2, 3, 15, 6, 12])  # what perfdhcp asks for
RELAY = IPv4Address(CLIENT_IP)
SERVER_ID = IPv4Address(SERVER_IP).packed


def _mac(i: int) -> bytes:
    return bytes([0x52, 0x54]) + i.to_bytes(4, "big")


def _discover(i: int) -> bytes:
    return encode(make_packet(1, i, _mac(i), giaddr=RELAY, options={
        o.MESSAGE_TYPE: bytes([o.DISCOVER]), o.PARAMETER_LIST: PARAMETERS}))


def _request(i: int, offered: IPv4Address) -> bytes:
    return encode(make_packet(1, i, _mac(i), giaddr=RELAY, options={
        o.MESSAGE_TYPE: bytes([o.REQUEST]), o.SERVER_ID: SERVER_ID,
        o.REQUESTED_IP: offered.packed, o.PARAMETER_LIST: PARAMETERS}))


class Round:
    """One round of ``n`` new clients through every step, each step timed."""

    def __init__(self, work: Path, n: int, first: int, leases: int) -> None:
        inv = loads(INVENTORY)
        ctx = ServeContext(inventory=inv, interfaces=[], state_dir=work, boot_root=work,
                           discovery=True, discovery_rate=0)
        self.journal = LeaseJournal(ctx.store)
        self.service = DhcpService(ctx)  # its _decide: the per-packet path, unbound
        self.policy = DhcpPolicy(inv, LeaseTable(self.journal.load()),
                                 DhcpSettings(discovery=True, new_mac_rate=0))
        self.service.policy = self.policy
        table = self.policy.table
        for i in range(leases):  # outside the pool's first addresses: 199.0.0.0 on
            table.bind("lan", f"aa:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:"
                       f"{i >> 8 & 255:02x}:{i & 255:02x}", 0xC7000000 + i, 1e12)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never bound
        self.ep = Endpoint(self.sock, Link("bench0", IPv4Address(SERVER_IP),
                                           IPv4Network(f"{SERVER_IP}/{PREFIX}", strict=False)))
        self.n, self.first = n, first
        self.times: dict[str, float] = {}

    def _timed(self, name: str, fn: Callable[[], object]) -> object:
        t = time.process_time()
        out = fn()
        self.times[name] = time.process_time() - t
        return out

    def run(self) -> dict[str, float]:
        ids = range(self.first, self.first + self.n)
        discovers = [_discover(i) for i in ids]
        now = time.time()
        link = self.ep.link
        pkts = self._timed("decode DISCOVER", lambda: [decode(d) for d in discovers])
        offers: list[Decision] = self._timed(  # type: ignore[assignment]
            "decide DISCOVER", lambda: [self.policy.handle(p, link, now) for p in pkts])
        self._timed("encode OFFER", lambda: [encode(d.reply, d.max_size) for d in offers
                                             if d.reply is not None])
        requests = [_request(i, d.reply.yiaddr) for i, d in zip(ids, offers, strict=True)
                    if d.reply is not None]
        reqs = self._timed("decode REQUEST", lambda: [decode(r) for r in requests])
        acks: list[Decision] = self._timed(  # type: ignore[assignment]
            "decide REQUEST", lambda: [self.policy.handle(p, link, now) for p in reqs])
        self._timed("encode ACK", lambda: [encode(d.reply, d.max_size) for d in acks
                                           if d.reply is not None])
        changes: list[Change] = [c for d in offers + acks for c in d.durable + d.lazy]
        self._timed("commit (fsync'd)", lambda: [
            self.journal.commit(changes[i:i + PER_COMMIT], now)
            for i in range(0, len(changes), PER_COMMIT)])
        batch = Batch({}, {})
        more = [_discover(i) for i in range(self.first + self.n, self.first + 2 * self.n)]
        self._timed("service _decide DISCOVER (decode + decide + counting, logging)",
                    lambda: [self.service._decide(self.ep, d, [], 0, batch) for d in more])
        return {k: v / self.n * 1e6 for k, v in self.times.items()}

    def close(self) -> None:
        self.sock.close()
        self.journal.store.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench dhcpcpu")
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--leases", type=int, default=100_000,
                    help="bound leases in the table before the clients come")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep Python's GC thresholds (dsas serve raises them)")
    ap.add_argument("--profile", action="store_true",
                    help="also print the functions that took the most time (cProfile)")
    args = ap.parse_args([a for a in argv if a != "dhcpcpu"])
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dsas-bench-dhcpcpu-", dir="/var/tmp") as tmp:
        wall0, cpu0, own0 = time.monotonic(), machine_cpu(), time.process_time()
        for r in range(REPEAT):
            rnd = Round(Path(tmp) / str(r), args.clients, (r + 1) * 10_000_000, args.leases)
            if not args.default_gc:
                tune_gc()
            for k, v in rnd.run().items():
                best[k] = min(best.get(k, v), v)
            rnd.close()
        wall = time.monotonic() - wall0
        other = 100 * max(0.0, machine_cpu() - cpu0 - (time.process_time() - own0)) / wall
        if args.profile:
            rnd = Round(Path(tmp) / "p", args.clients, 99_000_000, args.leases)
            prof = cProfile.Profile()
            prof.runcall(rnd.run)
            rnd.close()
    print(f"CPU per client, best of {REPEAT} rounds of {args.clients}, {args.leases} leases "
          f"already bound, GC {'Python default' if args.default_gc else 'as dsas serve'} (us):")
    for k, v in best.items():
        print(f"  {k:<64} {v:7.1f}")
    dora = sum(v for k, v in best.items() if not k.startswith("service"))
    print(f"  {'one 4-way exchange (decode, decide, encode x2; commit)':<64} {dora:7.1f}")
    print(f"other CPU during the rounds: {other:.1f}% of one core"
          f"{'' if other <= 10 else ' (loaded: CPU times are inflated by cache misses)'}")
    if args.profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0
