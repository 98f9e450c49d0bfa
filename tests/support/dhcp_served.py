"""The DHCP service on a veth pair, driven by raw packets from the client side: the
``served`` fixture (registered in tests/conftest.py) and its handle."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.testing import Lab
from provision.inventory import loads
from provision.protocol.dhcp import DhcpDecodeError, DhcpPacket, decode
from provision.services.base import ServeContext
from provision.services.dhcp import DhcpService, create
from tests.support.dhcp_support import (
    INVENTORY,
    SERVER,
)
from tests.support.netns_thread import in_netns


@dataclass
class Served:
    svc: DhcpService
    ctx: ServeContext
    sock: socket.socket  # client socket in the client namespace, port 68
    early: list[DhcpPacket] = field(default_factory=list)  # read while waiting for another

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("255.255.255.255", 67))

    def replies(self, xid: int, want: int = 1, wait: float = 3.0) -> list[DhcpPacket]:
        out = [p for p in self.early if p.xid == xid][:want]
        self.early = [p for p in self.early if p not in out]
        deadline = time.monotonic() + wait
        while len(out) < want and time.monotonic() < deadline:
            if not select.select([self.sock], [], [], deadline - time.monotonic())[0]:
                break
            try:
                p = decode(self.sock.recv(4096))
            except DhcpDecodeError:
                continue
            if p.xid == xid:
                out.append(p)
            else:
                self.early.append(p)
        return out


def client_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("0.0.0.0", 68))
    return s


@pytest.fixture
def served(lab: Lab, tmp_path: Path) -> Iterator[Served]:
    srv, cli = lab.netns("dsrv"), lab.netns("dcli")
    sif, cif = lab.veth(srv, cli, f"{SERVER}/24", None)
    ctx = ServeContext(inventory=loads(INVENTORY, "lab.yaml"), interfaces=[sif],
                       state_dir=tmp_path / "state", boot_root=tmp_path / "boot",
                       discovery=True)
    svc = create(ctx)
    assert isinstance(svc, DhcpService)
    in_netns(srv.name, svc.start)
    sock = in_netns(cli.name, lambda: client_socket(cif))
    try:
        yield Served(svc, ctx, sock)
    finally:
        sock.close()
        svc.stop()
        ctx.store.close()
