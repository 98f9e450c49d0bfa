"""Boot files over TFTP and HTTP with real clients (tftp-hpa, curl) in namespaces.

The servers run as `dsas serve --only tftp,http` inside a server namespace; the
clients run in a second namespace holding n1's address (198.18.4.11).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import Lab
from provision.protocol.tftp import netascii_encode
from tests.support.bootfiles_lab import CLI, HTTP, SRV, TEXT, Setup, sha_of, start_lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Lab() as lab:
        yield start_lab(lab, tmp_path_factory.mktemp("bootfiles"))


# ---------------------------------------------------------------------------- TFTP


def test_tftp_hpa_fetches_static_and_rendered_in_octet(env: Setup, tmp_path: Path) -> None:
    for name in ("images/tiny/1/vmlinuz", "pxelinux.0", "empty.bin", "images/tiny/1/initrd.img"):
        out = tmp_path / "out"
        r = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", name, str(out)], timeout=60,
                        check=False)
        assert r.returncode == 0 and not r.stderr, (name, r.stderr)
        assert sha_of(out) == env.sha(name), name
    conf = tmp_path / "dsas.conf"
    env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "hosts/n1/dsas.conf", str(conf)])
    assert b"SYSTEMNAME=n1\n" in conf.read_bytes()
    http_copy = env.curl(f"{HTTP}/hosts/n1/dsas.conf").stdout
    # the same file, but over HTTP with this boot's report token (dsas-init sends it back)
    head, _, tail = http_copy.partition("#---- Boot report")
    assert conf.read_text() == head and re.search(
        r"^DSAS_BOOT_ID=[0-9a-f]+-[0-9a-f]{12}\nDSAS_BOOT_TOKEN=[0-9a-f]{32}\n$", tail, re.M)


def test_tftp_hpa_netascii_round_trip(env: Setup, tmp_path: Path) -> None:
    out = tmp_path / "notes"
    env.cli.run(["tftp", SRV, "-m", "netascii", "-c", "get", "notes.txt", str(out)])
    assert sha_of(out) == env.sha("notes.txt")  # CR LF / CR NUL decoded back exactly
    cfg = tmp_path / "cfg"
    env.cli.run(["tftp", SRV, "-m", "netascii", "-c", "get",
                 "pxelinux.cfg/01-52-54-00-04-00-11", str(cfg)])
    assert cfg.read_text().startswith("# dsas: pxelinux config for n1")


@pytest.mark.parametrize("blksize", [512, 1468, 8192, 65464])
def test_curl_tftp_block_sizes(env: Setup, tmp_path: Path, blksize: int) -> None:
    for name in ("images/tiny/1/vmlinuz", "images/tiny/1/initrd.img"):
        out = tmp_path / f"o{blksize}"
        r = env.curl("--tftp-blksize", str(blksize), f"tftp://{SRV}/{name}", "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert sha_of(out) == env.sha(name)


def test_curl_tftp_netascii_is_on_the_wire_encoding(env: Setup, tmp_path: Path) -> None:
    out = tmp_path / "n"
    r = env.curl("--use-ascii", f"tftp://{SRV}/notes.txt", "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data in (TEXT, netascii_encode(TEXT))  # curl may keep the wire form
    # On the wire, exactly the netascii encoding (the raw probe keeps what it received).
    wire = env.probe("get", SRV, "notes.txt", "--mode", "netascii")
    assert wire["sha256"] == hashlib.sha256(netascii_encode(TEXT)).hexdigest(), wire
    assert netascii_encode(TEXT) != TEXT  # the file has bare LF and CR to encode


def test_tsize_exact_for_rendered_and_netascii(env: Setup) -> None:
    conf = env.curl(f"{HTTP}/hosts/n2/dsas.conf").stdout.encode()
    conf = conf.partition(b"#---- Boot report")[0]  # HTTP only: the boot-report token
    r = env.probe("get", SRV, "hosts/n2/dsas.conf", "--opt", "tsize=0", "--opt", "blksize=1400")
    assert r["oack"] == {"tsize": str(len(conf)), "blksize": "1400"}
    assert r["size"] == len(conf)
    r = env.probe("get", SRV, "notes.txt", "--mode", "netascii", "--opt", "tsize=0")
    assert int(r["oack"]["tsize"]) == len(netascii_encode(TEXT)) == r["size"]


def test_windowsize_and_oversize_blksize(env: Setup) -> None:
    r = env.probe("get", SRV, "images/tiny/1/vmlinuz", "--opt", "blksize=70000",
                  "--opt", "windowsize=8", "--opt", "tsize=0")
    assert r["oack"]["blksize"] == "65464" and r["oack"]["windowsize"] == "8"
    assert r["sha256"] == env.sha("images/tiny/1/vmlinuz")


def test_pxelinux_config_differs_per_mac(env: Setup) -> None:
    a = env.curl(f"tftp://{SRV}/pxelinux.cfg/01-52-54-00-04-00-11").stdout
    b = env.curl(f"tftp://{SRV}/pxelinux.cfg/01-52-54-00-04-00-12").stdout
    assert "dsas.host=n1" in a and "dsas.host=n2" in b and a != b
    assert "dsas.host=n1" in env.curl(f"tftp://{SRV}/pxelinux.cfg/C612040B").stdout


def test_unknown_machine_gets_immediate_error_1(env: Setup) -> None:
    r = env.probe("get", SRV, "pxelinux.cfg/01-52-54-00-99-99-99", "--opt", "tsize=0")
    assert r["error"] == 1 and "not in inventory" in r["message"]
    # Immediate: the answer to the first RRQ, with no OACK first (its latency: bench/).
    assert r["rrq_sent"] == 1 and "oack" not in r, r
    assert env.probe("get", SRV, "no/such/file")["error"] == 1


def test_retransmitted_request_gets_one_transfer(env: Setup) -> None:
    """A client that repeats its RRQ (our answer was late) is served by one process."""
    spawns = env.metric("dsas_tftp_spawns_total")
    dups = env.metric("dsas_tftp_duplicate_requests_total")
    name = "images/tiny/1/initrd.img"
    r = env.probe("get", SRV, name, "--opt", "blksize=1468", "--requests", "3")
    assert r["sha256"] == env.sha(name) and r["server_tids"] == 1, r
    assert env.metric("dsas_tftp_spawns_total") == spawns + 1
    assert env.metric("dsas_tftp_duplicate_requests_total") == dups + 2
    # A different request from the same port (a size probe, then the download) is new.
    assert env.probe("two", SRV, name, "--timeout", "2", timeout=10)["server_tids"] == 2
    assert env.metric("dsas_tftp_spawns_total") == spawns + 3
    assert env.metric("dsas_tftp_duplicate_requests_total") == dups + 2


def test_write_request_is_access_violation(env: Setup, tmp_path: Path) -> None:
    f = tmp_path / "up"
    f.write_bytes(b"x" * 100)
    r = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "put", str(f), "up"], check=False)
    assert "Error code 2" in r.stdout + r.stderr
    assert not (env.root / "up").exists()


def test_ovmf_probe_is_not_a_failure(env: Setup) -> None:
    before = env.metric('dsas_tftp_transfers_total{result="probe"}')
    failed = env.metric('dsas_tftp_transfers_total{result="failed"}')
    r = env.probe("probe", SRV, "ipxe.efi", "--opt", "tsize=0", "--opt", "blksize=1468",
                  "--opt", "windowsize=4")
    assert r["probed"] and int(r["oack"]["tsize"]) == os.path.getsize(env.root / "ipxe.efi")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if env.metric('dsas_tftp_transfers_total{result="probe"}') == before + 1:
            break
        time.sleep(0.1)
    assert env.metric('dsas_tftp_transfers_total{result="probe"}') == before + 1
    assert env.metric('dsas_tftp_transfers_total{result="failed"}') == failed


# ------------------------------------------------------------------- confinement

# (TFTP name, HTTP path or None, expected TFTP error code)
TRAVERSALS = [
    ("../../etc/passwd", "/../../etc/passwd", 2),
    ("images/../../../etc/passwd", "/images/../../../etc/passwd", 2),
    ("//etc/passwd", "//etc/passwd", 2),
    ("..\\..\\etc\\passwd", "/..%5C..%5Cetc%5Cpasswd", 2),
    # a NUL splits a TFTP request: it cannot name a file, the request is illegal
    ("pxelinux.0\\x00../../etc/passwd", "/pxelinux.0%00/../etc/passwd", 4),
    ("x" * 300, "/" + "x" * 300, 2),
    ("escape.txt", "/escape.txt", 2),
    ("fifo", "/fifo", 2),
    ("%2e%2e/etc/passwd", "/%2e%2e/etc/passwd", 1),  # TFTP has no %-escapes: just a name
]


def test_traversal_list_refused_by_both(env: Setup) -> None:
    for name, http_path, code in TRAVERSALS:
        r = env.probe("get", SRV, name)
        assert r.get("error") == code, (name, r)
        assert "secret" not in json.dumps(r)
        if http_path:
            h = env.curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                         HTTP + http_path)
            assert h.stdout == "403", (http_path, h.stdout)
    m = env.metrics()
    for reason in ("traversal", "absolute", "backslash", "nul", "too_long", "outside_root",
                   "not_regular"):
        proto = ("http",) if reason == "nul" else ("tftp", "http")
        for p in proto:
            assert re.search(rf'dsas_{p}_errors_total{{reason="{reason}"}} [1-9]', m), (p, reason)


# ---------------------------------------------------------------------------- HTTP


def test_http_get_head_range_etag(env: Setup, tmp_path: Path) -> None:
    name = "images/tiny/1/vmlinuz"
    data = env.files[name]
    out = tmp_path / "k"
    r = env.curl(f"{HTTP}/{name}", "-o", str(out), "-w", "%{http_code}")
    assert r.stdout == "200" and sha_of(out) == env.sha(name)
    head = env.curl("-I", f"{HTTP}/{name}").stdout
    assert f"Content-Length: {len(data)}" in head and "Accept-Ranges: bytes" in head
    etag = re.search(r"ETag: (\S+)", head).group(1)  # type: ignore[union-attr]
    r = env.curl("-r", "100-1099", f"{HTTP}/{name}", "-o", str(out), "-w", "%{http_code}")
    assert r.stdout == "206" and out.read_bytes() == data[100:1100]
    r = env.curl("-r", "-500", f"{HTTP}/{name}", "-o", str(out), "-w", "%{http_code}")
    assert r.stdout == "206" and out.read_bytes() == data[-500:]
    r = env.curl("-r", f"{len(data)}-", f"{HTTP}/{name}", "-o", "/dev/null", "-w",
                 "%{http_code}")
    assert r.stdout == "416"
    r = env.curl("-H", f"If-None-Match: {etag}", f"{HTTP}/{name}", "-o", "/dev/null", "-w",
                 "%{http_code}")
    assert r.stdout == "304"
    r = env.curl("-X", "DELETE", f"{HTTP}/{name}", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == "405"


def test_http_rendered_files_and_unknown_host(env: Setup) -> None:
    r = env.curl("-i", f"{HTTP}/hosts/n1/boot.ipxe")
    assert "#!ipxe" in r.stdout and "Cache-Control: no-cache" in r.stdout
    r = env.curl(f"{HTTP}/hosts/ghost/dsas.conf", "-w", "%{http_code}")
    assert r.stdout.endswith("404") and "not in inventory" in r.stdout
    assert env.curl(f"{HTTP}/healthz").stdout == "ok\n"


def test_served_discovery_script_follows_templates_and_sighup(lab: Lab, tmp_path: Path) -> None:
    """`dsas serve --templates DIR` serves DIR's discovery.ipxe over HTTP and TFTP (it
    served the packaged one), and reads a changed template again on SIGHUP only."""
    over = tmp_path / "templates"
    over.mkdir()
    (over / "discovery.ipxe.j2").write_text("#!ipxe\necho one {{ inv.cluster.name }}\n")
    env = start_lab(lab, tmp_path, files={}, flags=("--templates", str(over)))
    serve = lab.procs[-1]  # ip netns exec execs: this is dsas serve's PID

    def both() -> tuple[str, str]:
        out = tmp_path / "discovery.ipxe"
        r = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "discovery.ipxe", str(out)],
                        timeout=30, check=False)
        assert r.returncode == 0 and not r.stderr, r.stderr
        http = env.curl("--fail", f"{HTTP}/discovery.ipxe")
        assert http.returncode == 0, http.stderr
        return out.read_text(), http.stdout

    assert both() == ("#!ipxe\necho one lab\n",) * 2
    (over / "discovery.ipxe.j2").write_text("#!ipxe\necho two {{ inv.cluster.name }}\n")
    assert both() == ("#!ipxe\necho one lab\n",) * 2  # read once, not per request
    serve.send_signal(signal.SIGHUP)
    got = both()
    for _ in range(50):  # bounded: the supervisor acts on the signal within 0.2 s
        if got == ("#!ipxe\necho two lab\n",) * 2:
            break
        time.sleep(0.1)
        got = both()
    assert got == ("#!ipxe\necho two lab\n",) * 2
    assert serve.poll() is None


def test_events_recorded_and_listed(env: Setup) -> None:
    def post(body: str) -> str:
        return env.curl("-H", "Content-Type: application/json", "-d", body, "-o", "/dev/null",
                        "-w", "%{http_code}", f"{HTTP}/api/v1/events").stdout

    assert post('{"host": "n1", "stage": "kernel"}') == "201"
    assert post('{"stage": "failed", "reason": "disk /dev/sda missing", '
                '"image": "tiny@7"}') == "201"  # by peer
    assert post('{"host": "n2", "stage": "ready"}') == "403"  # n1's address claims n2
    assert post('{"host": "ghost", "stage": "ready"}') == "404"
    assert post('{"host": "n1", "stage": "dancing"}') == "400"
    assert post('{"host": "n1", "stage": "failed"}') == "400"
    assert post("not json") == "400"
    assert post('{"host": "n1", "stage": "ready", "extra": "x"}') == "400"
    assert post('{"host": "n1", "stage": "ready", "reason": "' + "a" * 5000 + '"}') == "413"
    nodes = {n["host"]: n for n in json.loads(env.curl(f"{HTTP}/api/v1/nodes").stdout)["nodes"]}
    assert nodes["n1"]["stage"] == "failed" and nodes["n1"]["reason"] == "disk /dev/sda missing"
    assert nodes["n1"]["address"] == CLI and nodes["n1"]["image"] == "tiny"
    assert nodes["n1"]["version"] == "7"  # IMAGE@VERSION reported: image and version apart
    assert nodes["n2"]["image"] == "tiny" and nodes["n2"]["version"] is None  # no report
    assert nodes["n1"]["when"] and nodes["n2"]["stage"] is None
    with sqlite3.connect(env.state / "state.db") as db:
        rows = db.execute("SELECT host, stage, ts FROM http_events ORDER BY id").fetchall()
    assert [(h, s) for h, s, _ in rows] == [("n1", "kernel"), ("n1", "failed")]
    assert abs(rows[-1][2] - time.time()) < 60


# ------------------------------------------------------------ loss and vanishing


def test_transfers_survive_5_percent_loss(tmp_path: Path) -> None:
    with Lab() as lab:
        # A long busy-poll budget: lock-step ACKs are caught by polling, and a lost one
        # leaves polling for the retransmission timer.
        env = start_lab(lab, tmp_path, loss=True, flags=("--tftp-busy-poll", "5000"))
        name = "images/tiny/1/initrd.img"
        for blk in ("1468", "512"):
            out = tmp_path / f"l{blk}"
            r = env.curl("--max-time", "60", "--tftp-blksize", blk, f"tftp://{SRV}/{name}",
                         "-o", str(out), timeout=70)
            assert r.returncode == 0, r.stderr
            assert sha_of(out) == env.sha(name)
        out = tmp_path / "lh"
        r = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", name, str(out)], timeout=70,
                        check=False)
        assert sha_of(out) == env.sha(name), r.stderr
        # RFC 7440 windows through loss, on a file larger than the server's read-ahead
        # buffer: gap and timeout resends reach back across its refills.
        big = "images/tiny/1/vmlinuz"
        w = env.probe("get", SRV, big, "--opt", "blksize=1468", "--opt", "windowsize=8",
                      timeout=70)
        assert w["oack"]["windowsize"] == "8" and w["sha256"] == env.sha(big), w
        r = env.curl("--max-time", "60", f"{HTTP}/images/tiny/1/vmlinuz", "-o", str(out),
                     timeout=70)
        assert sha_of(out) == env.sha("images/tiny/1/vmlinuz")
        assert env.metric("dsas_tftp_retransmits_total") > 0
        # (Whether a poll catches an ACK depends on the machine's load: polling is
        # tested deterministically in tests/unit/test_tftp_poll.py.)


def test_vanished_client_frees_its_slot_and_cap_is_clean(tmp_path: Path) -> None:
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files={"big.bin": os.urandom(1 << 20)},
                        flags=("--tftp-max-transfers", "1", "--tftp-timeout", "2",
                               "--tftp-busy-poll", "0"))
        r = env.probe("vanish", SRV, "big.bin")
        assert r["vanished_after"] == 1
        t0 = time.monotonic()
        busy = env.probe("get", SRV, "big.bin")  # the one slot is taken
        assert busy["error"] == 0 and "busy" in busy["message"]
        got = None
        while time.monotonic() - t0 < 10:
            got = env.probe("get", SRV, "big.bin", timeout=5)
            if "error" not in got:
                break
            time.sleep(0.5)
        assert got and got["size"] == 1 << 20, got
        # The slot was freed by the vanished transfer's timeout, not by anything else.
        assert env.metric("dsas_tftp_transfers_total{result=\"failed\"}") == 1
        assert env.metric('dsas_tftp_errors_total{reason="timeout"}') == 1
        assert env.metric("dsas_tftp_transfers_total{result=\"ok\"}") == 1
        assert env.metric("dsas_tftp_polled_acks_total") == 0  # --tftp-busy-poll 0: never
        assert env.metric("dsas_tftp_transfer_cpu_seconds_total") > 0


def test_malformed_datagrams_do_not_kill_the_server(env: Setup) -> None:
    script = (
        "import socket\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for p in [b'', b'\\x00', b'\\x00\\x01', b'\\x00\\x01abc', b'\\x00\\x09x\\x00o\\x00',"
        " b'\\x00\\x01a\\x00octet\\x00blksize\\x00', b'\\xff'*2000, b'\\x00\\x04\\x00\\x01']:\n"
        f"    s.sendto(p, ('{SRV}', 69))\n"
    )
    env.cli.run([sys.executable, "-c", script])
    r = env.curl(f"tftp://{SRV}/pxelinux.0", "-o", "/dev/null", "-w", "%{size_download}")
    assert r.stdout == str(len(env.files["pxelinux.0"]))
    assert env.metric('dsas_tftp_errors_total{reason="malformed"}') >= 6
