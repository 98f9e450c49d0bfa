"""The HTTP service against abusive clients, in the lab (issue 13 items 1, 2, 6, 9, 10).

`dsas serve --only http` runs in a server namespace; the clients run in a second
namespace that holds n1's address (198.18.4.11), n2's (198.18.4.12) and a stray
address no inventory host has (198.18.4.50). Real curl, real sockets; every wait
is bounded.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lab.testing import Lab, require_tool
from tests.support.http_lab import DSAS, EVENTS, HTTP, N1, N2, PORT, SRV, STRAY, Master, start
from tests.support.paths import ROOT as REPO


def wait_for(what: str, check, timeout: float = 60, step: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def idle_clients(m: Master, count: int, seconds: float, source: str = N1) -> subprocess.Popen:
    return m.cli.popen([sys.executable, "-m", "tests.support.idle_clients", SRV, str(PORT),
                        str(count), str(seconds), source],
                       cwd=REPO, stdout=subprocess.PIPE, text=True)


def read_lines(proc: subprocess.Popen, timeout: float) -> list[str]:
    out, _ = proc.communicate(timeout=timeout)
    return out.splitlines()


# ------------------------------------------------------------ item 2: idle connections


def test_idle_flood_past_the_descriptor_limit_degrades_only_http(lab: Lab,
                                                                   tmp_path: Path) -> None:
    """300 idle connections against a server with 128 descriptors (the issue's 1,100
    against 1,024, scaled down): the excess is refused and counted, the idle ones are
    closed at the header timeout, then a real curl is served; a few log lines, no
    traceback, the process alive."""
    m = start(lab, tmp_path, "--http-header-timeout", "2", "--http-idle-timeout", "5",
              "--http-max-per-client", "1000", nofile=128)
    holder = idle_clients(m, 300, 40)
    lines = read_lines(holder, timeout=60)
    opened = int(lines[0].split()[1])
    assert lines[-1] == f"closed {opened}", lines[-3:]  # every one closed by the server
    assert m.status(f"{HTTP}/healthz") == "200"
    assert m.status(f"{HTTP}/images/tiny/1/vmlinuz") == "200"
    assert m.alive()
    assert m.metric("dsas_http_connections_refused_total", reason="descriptors") > 0
    assert m.metric("dsas_http_connections_closed_total", reason="header_timeout") > 0
    text = m.log_text()
    assert "Traceback" not in text and len(text.splitlines()) < 30, text[-3000:]
    assert text.count("out of file descriptors") <= 2


def test_connection_caps_keep_one_client_from_taking_every_slot(lab: Lab,
                                                                 tmp_path: Path) -> None:
    """One address holding 100 idle connections gets 20 (--http-max-per-client); the
    rest are refused at once, and another host is served meanwhile."""
    m = start(lab, tmp_path, "--http-max-per-client", "20", "--http-header-timeout", "30")
    holder = idle_clients(m, 100, 20)
    wait_for("the refusals", lambda: m.metric("dsas_http_connections_refused_total",
                                              reason="client_cap", ) >= 80, timeout=30)
    assert m.metric("dsas_http_connections_refused_total", reason="client_cap") == 80
    assert m.status(f"{HTTP}/healthz", source=N2) == "200"  # while the 20 are held
    assert m.metric("dsas_http_connections") >= 20
    holder.kill()
    holder.communicate(timeout=10)
    text = m.log_text()
    assert "Traceback" not in text and text.count("--http-max-per-client") == 1


def test_a_trickled_request_head_is_closed_at_the_header_timeout(lab: Lab,
                                                                 tmp_path: Path) -> None:
    """A client sending one header line every 0.5 s never completes its request: the
    server closes it at --http-header-timeout, although it is never idle."""
    m = start(lab, tmp_path, "--http-header-timeout", "2", "--http-idle-timeout", "60")
    res = m.tool("trickle", SRV, str(PORT), "30", timeout=60)
    assert res["closed_by_server"] is True, res  # type: ignore[index]
    assert m.metric("dsas_http_connections_closed_total", reason="header_timeout") == 1
    assert m.status(f"{HTTP}/healthz") == "200"


# ------------------------------------------------------------ item 1: forged reports


def conf_token(m: Master, host: str, source: str) -> dict[str, str]:
    text = m.curl(f"{HTTP}/hosts/{host}/dsas.conf", source=source).stdout
    return dict(re.findall(r"^(DSAS_BOOT_ID|DSAS_BOOT_TOKEN)=(\S+)$", text, re.M))


def host_key(tmp: Path, name: str) -> str:
    require_tool("ssh-keygen")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)],
                   check=True)
    return (tmp / f"{name}.pub").read_text().strip()


def test_reports_only_from_the_hosts_own_address_and_keys_only_with_its_token(
        lab: Lab, tmp_path: Path) -> None:
    """A stray address cannot report for n1 (nor n1 for n2), a key needs this boot's
    token, refusals are counted and logged once per source, and `dsas trust` trusts
    only the key n1 reported itself with its token."""
    m = start(lab, tmp_path, "--http-event-burst", "1000")
    assert m.post('{"host": "n1", "stage": "ready"}', STRAY)[0] == "403"
    assert m.post('{"host": "m1", "stage": "ready"}', STRAY)[0] == "403"  # the master
    assert m.post('{"host": "n2", "stage": "ready"}', N1)[0] == "403"
    for _ in range(30):
        m.post('{"host": "n1", "stage": "ready"}', STRAY)
    assert m.metric("dsas_http_events_refused_total", reason="source") == 33
    assert m.log_text().count(f"refused a report from {STRAY}") == 1
    tok = conf_token(m, "n1", N1)
    assert set(tok) == {"DSAS_BOOT_ID", "DSAS_BOOT_TOKEN"}
    good = host_key(tmp_path, "n1key")
    body = {"host": "n1", "stage": "ready", "ssh_key": good,
            "boot_id": tok["DSAS_BOOT_ID"], "token": tok["DSAS_BOOT_TOKEN"]}
    # the right token from the wrong address, and n2's token for n1: refused
    assert m.post(json.dumps(body), STRAY)[0] == "403"
    tok2 = conf_token(m, "n2", N2)
    forged = {**body, "boot_id": tok2["DSAS_BOOT_ID"], "token": tok2["DSAS_BOOT_TOKEN"]}
    code, text = m.post(json.dumps(forged), N1)
    assert code == "403" and "token" in text
    assert m.post(json.dumps(body), N1)[0] == "201"
    # n2 reports a key without a token (a disk boot, an old image): stored, not trusted
    assert m.post(json.dumps({"host": "n2", "stage": "ready",
                              "ssh_key": host_key(tmp_path, "n2key")}), N2)[0] == "201"
    # a row a forger left before this release (or in a copied state.db)
    with sqlite3.connect(m.state / "state.db") as db:
        db.execute("INSERT INTO http_host_keys(host, key_type, key, ts, address, verified) "
                   "VALUES ('m1', 'ssh-ed25519', ?, 1, ?, 1)", (good.split()[1], STRAY))
    r = subprocess.run([DSAS, "trust", "--all-reported", "--yes", "-i", str(m.inventory),
                        "--state-dir", str(m.state)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "1 key(s) of n1 trusted" in r.stdout
    assert re.search(r"^m1 ssh-ed25519 .* REFUSED: reported from 198\.18\.4\.50", r.stderr,
                     re.M), r.stderr
    assert re.search(r"^n2 ssh-ed25519 .* REFUSED: reported without a valid boot token",
                     r.stderr, re.M), r.stderr
    assert "not from the host itself: m1, n2" in r.stderr
    known = (m.state / "ssh/known_hosts").read_text()
    assert good.split()[1] in known and N1 in known and STRAY not in known
    assert len(known.splitlines()) == 1
    secret = m.state / "boot-report.key"
    assert secret.stat().st_mode & 0o077 == 0 and secret.read_bytes().hex() not in \
        m.log_text()


# ------------------------------------------------------------ item 6: event floods


def test_event_flood_is_rate_limited_and_the_table_stays_bounded(lab: Lab,
                                                                  tmp_path: Path) -> None:
    """n1 posts 400 events as fast as it can: most get 429, the table keeps at most
    --http-events-per-host of them plus the last of each stage, and n2's reports are
    still accepted."""
    m = start(lab, tmp_path, "--http-event-rate", "5", "--http-event-burst", "10",
              "--http-events-per-host", "20")
    assert m.post('{"host": "n1", "stage": "kernel"}', N1)[0] == "201"
    res = m.tool("post", EVENTS, N1, "400", '{"host": "n1", "stage": "initramfs"}')
    status = res["status"]  # type: ignore[index]
    assert status.get("429", 0) > 300 and set(status) <= {"201", "429"}, status
    assert m.post('{"host": "n2", "stage": "ready"}', N2)[0] == "201"
    assert m.log_text().count(f"refused a report from {N1}") == 1
    assert m.metric("dsas_http_events_refused_total", reason="rate") == status["429"]
    with sqlite3.connect(m.state / "state.db") as db:
        rows = db.execute("SELECT host, stage FROM http_events").fetchall()
    n1 = [s for h, s in rows if h == "n1"]
    assert len(n1) <= 21 and "kernel" in n1 and ("n2", "ready") in rows


def test_events_kept_per_host_are_the_last_n_and_the_last_of_each_stage(
        lab: Lab, tmp_path: Path) -> None:
    m = start(lab, tmp_path, "--http-event-rate", "10000", "--http-event-burst", "10000",
              "--http-events-per-host", "20")
    for stage in ("dhcp", "kernel"):
        assert m.post(json.dumps({"host": "n1", "stage": stage}), N1)[0] == "201"
    res = m.tool("post", EVENTS, N1, "200", '{"host": "n1", "stage": "initramfs"}')
    assert res == {"status": {"201": 200}}
    with sqlite3.connect(m.state / "state.db") as db:
        rows = db.execute("SELECT stage FROM http_events WHERE host='n1' ORDER BY id").fetchall()
    assert [s for (s,) in rows] == ["dhcp", "kernel"] + ["initramfs"] * 20


# ------------------------------------------------------------ item 9: bad bodies


def test_bad_event_bodies_get_400_with_one_line_never_500(lab: Lab, tmp_path: Path) -> None:
    m = start(lab, tmp_path, "--http-event-burst", "1000")
    bodies = {
        # deeper than the JSON parser's recursion limit (about 1,000), within 4 KiB
        "nested list": "[" * 2000 + "]" * 2000,
        "nested object": '{"":' * 800 + "1" + "}" * 800,
        "nested in a field": '{"host": "n1", "stage": ' + "[" * 1900 + "]" * 1900 + "}",
        "not json": "stage=ready&host=n1",
        "array": '["host", "n1"]',
        "number": "42",
        "host a number": '{"host": 5, "stage": "ready"}',
        "stage a list": '{"host": "n1", "stage": ["ready"]}',
        "detail an object": '{"host": "n1", "stage": "ready", "detail": {"x": 1}}',
        "NaN": '{"host": "n1", "stage": NaN}',
        "control characters": '{"host": "n1", "stage": "ready", "detail": "a\\nCRITICAL x"}',
        "empty": "",
    }
    for what, body in bodies.items():
        code, text = m.post(body, N1)
        assert code == "400", (what, code, text)
        assert "\n" not in text.strip() and json.loads(text)["error"], (what, text)
    bad_utf8 = m.cli.run(["sh", "-c", f"printf '\\303\\050' | curl -sS --interface {N1} "
                          f"-o /dev/null -w '%{{http_code}}' --data-binary @- {EVENTS}"],
                         check=False)
    assert bad_utf8.stdout == "400"
    assert m.post("{" + '"a":"' + "x" * 5000 + '"}', N1)[0] == "413"
    # no Content-Length (chunked): still cut at the limit
    code, _ = m.post('{"host": "n1", "stage": "ready", "detail": "' + "y" * 6000 + '"}', N1,
                     "-H", "Transfer-Encoding: chunked")
    assert code == "413"
    assert m.post('{"host": "n1", "stage": "ready"}', N1)[0] == "201"
    text = m.log_text()
    assert "Traceback" not in text and " 500 " not in text and "CRITICAL x" not in text


# ------------------------------------------------------------ item 10: log noise


def test_malformed_requests_and_aborted_transfers_leave_no_traceback(lab: Lab,
                                                                    tmp_path: Path) -> None:
    m = start(lab, tmp_path)
    bad = [b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
           b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
           b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
           b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"zz\r\n{}\r\n0\r\n\r\n",
           b"GET / HTTP/9.9\r\n\r\n",
           b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
           b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)]
    answers = m.tool("raw", SRV, str(PORT), *[b.hex() for b in bad * 20])
    assert all(re.match(r"HTTP/1\.\d [45]\d\d ", a) and " 500 " not in a or a == "closed"
               for a in answers), answers  # type: ignore[union-attr]
    assert m.tool("abort", SRV, str(PORT), "/images/tiny/1/vmlinuz", "30") == {"aborted": 30}
    wait_for("the aborted transfers counted",
             lambda: m.metric("dsas_http_transfers_total", result="aborted") >= 1, timeout=30)
    assert m.status(f"{HTTP}/images/tiny/1/vmlinuz") == "200" and m.alive()
    text = m.log_text()
    assert "Traceback" not in text, text[-4000:]
    assert len(text.splitlines()) < 20, text[-4000:]
    assert m.metric("dsas_http_bad_requests_total") >= 20
