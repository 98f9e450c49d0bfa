"""The DNS lab: `dsas serve --only dns` in a namespace, a client namespace, a silent
upstream; the ``net`` fixture (registered in tests/conftest.py) and helpers."""

from __future__ import annotations

import ctypes
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from lab.testing import Lab, Netns, require_tool
from tests.support.dns_helpers import DOMAIN, inventory_text

SERVER = "198.18.0.1"


SERVER2 = "198.18.0.3"  # a second address on the same interface, for a second server


CLIENT = "198.18.0.50"


UPSTREAM = "198.18.200.2"


DSAS = str(Path(sys.executable).parent / "dsas")


@dataclass
class Net:
    lab: Lab
    master: Netns
    client: Netns
    upstream: Netns
    master_if: str
    master_up_if: str
    work: Path

    def serve(self, inv: Path, *args: str) -> subprocess.Popen[Any]:
        n = len(self.lab.procs)
        with open(self.work / f"serve-{n}.log", "w") as log:
            return self.master.popen(
                [DSAS, "serve", "-i", str(inv), "--only", "dns", "--state-dir",
                 str(self.work / f"state{n}"), "--boot-root", str(self.work), *args],
                stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def net(lab: Lab, tmp_path: Path) -> Iterator[Net]:
    require_tool("dig")
    master, client, upstream = lab.netns("dnsm"), lab.netns("dnsc"), lab.netns("dnsu")
    m_if, _ = lab.veth(master, client, f"{SERVER}/22", f"{CLIENT}/22")
    master.addr(m_if, f"{SERVER2}/22")
    m_up, _ = lab.veth(master, upstream, "198.18.200.1/24", f"{UPSTREAM}/24")
    yield Net(lab, master, client, upstream, m_if, m_up, tmp_path)


def write_inventory(path: Path, web_hosts: int = 3, **kw: str) -> Path:
    path.write_text(inventory_text(web_hosts, **kw))
    return path


def dig(ns: Netns, server: str, *args: str) -> dict[str, Any]:
    """dig's reply as a dict (+yaml); the last message when dig retried over TCP."""
    out = ns.run([require_tool("dig"), f"@{server}", "+yaml", "+time=2", "+tries=1", *args],
                 check=False, timeout=30)
    docs = YAML(typ="safe").load(io.StringIO(out.stdout)) or []
    msgs = [d["message"] for d in docs if d.get("type") == "MESSAGE"]
    assert msgs, f"no reply from {server} for {args}: {out.stdout}{out.stderr}"
    data = msgs[-1]["response_message_data"]
    data["protocol"] = msgs[-1]["socket_protocol"]
    data["all"] = msgs
    return data


def wait_answering(ns: Netns, server: str, proc: subprocess.Popen[Any]) -> None:
    for _ in range(100):  # bounded: 100 x (up to 0.3 s)
        assert proc.poll() is None, "dsas serve exited"
        out = ns.run(["dig", f"@{server}", "+short", "+time=1", "+tries=1", f"m1.{DOMAIN}"],
                     check=False, timeout=10)
        if out.returncode == 0 and out.stdout[:1].isdigit():
            return
        time.sleep(0.2)
    raise AssertionError(f"{server} never answered")


SILENT = """
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], 53))
t = socket.socket(); t.bind((sys.argv[1], 53)); t.listen(8)
time.sleep(120)
"""


CLONE_NEWNET = 0x40000000  # setns(2)


_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """Run this thread in ``ns``: sockets made here stay there (setns(2) is per thread)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns.name}")
        yield
    finally:
        if _libc.setns(own, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(own)
        os.close(target)
