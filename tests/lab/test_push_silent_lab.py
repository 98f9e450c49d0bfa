"""dsas-push against a node whose SSH port accepts and says nothing (a hung sshd, a
tarpit): one line per host with one cause, never a traceback; --status keeps such a
host (unreachable) apart from the ones that run another release (drift)."""

from __future__ import annotations

import json
import re
import sys

from lab.sshfarm import wait_listen
from lab.testing import require_tool
from tests.support.push_lab import assert_ok, make_lab, release_of, write_tree

SILENT = ("import socket, time\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('{addr}', 22)); s.listen(8)\n"
          "conns = []\n"
          "for _ in range(64):\n"
          "    conns.append(s.accept()[0])  # accept, say nothing, keep it open\n"
          "time.sleep(600)\n")


def test_a_silent_ssh_port_is_one_line_and_unreachable_is_not_drift(lab, tmp_path):
    require_tool("ss")
    pl = make_lab(lab, tmp_path, count=3)
    write_tree(pl.src, {"index.html": "v1"})
    rel1 = release_of(pl.push(str(pl.src), "--role", "web"))
    write_tree(pl.src, {"index.html": "v2"})
    rel2 = release_of(pl.push(str(pl.src), "--host", "n01", "--host", "n02"))
    n02 = pl.node("n02")
    n02.kill_sshd()
    n02.ns.popen([sys.executable, "-c", SILENT.format(addr=n02.address)])
    wait_listen(n02.ns, n02.address, 22)
    st = pl.push("--status", "--role", "web", timeout=120)
    assert st.returncode == 1
    assert "Traceback" not in st.stderr and "paramiko" not in st.stderr, st.stderr
    assert re.search(rf"^n01\s+{rel2}\s+current", st.stdout, re.M), st.stdout
    assert re.search(r"^n02\s+-\s+unreachable \(198\.\S+:22 accepted the connection but "
                     r"sent no SSH greeting in 10 s\)", st.stdout, re.M), st.stdout
    assert re.search(rf"^n03\s+{rel1}\s+stale \(latest {rel2}\)", st.stdout, re.M), st.stdout
    assert re.search(r"^drift: 1 host\(s\) not current: n03$", st.stderr, re.M), st.stderr
    assert re.search(r"^unreachable: 1 host\(s\): n02$", st.stderr, re.M), st.stderr
    js = pl.push("--status", "--role", "web", "--json", timeout=120)
    doc = json.loads(js.stdout)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["n01"]["state"] == "current" and hosts["n01"]["live"] == rel2
    assert hosts["n02"]["state"] == "unreachable" and hosts["n02"]["reason"]
    assert hosts["n03"]["state"] == "stale" and hosts["n03"]["live"] == rel1
    assert doc["drift"] == ["n03"] and doc["unreachable"] == ["n02"]
    assert js.returncode == 1
    write_tree(pl.src, {"index.html": "v3"})
    r = pl.push(str(pl.src), "--role", "web", timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "paramiko" not in r.stderr, r.stderr
    for stream in (r.stdout, r.stderr):  # the summary row; the progress report's line
        causes = [ln for ln in stream.splitlines() if "n02" in ln and "unreachable" in ln]
        assert len(causes) == 1 and causes[0].count("unreachable") == 1, stream
        assert "no SSH greeting" in causes[0]
    assert_ok(pl.push("--status", "--host", "n01"))
    log = pl.dsas("push", "log", "--state-dir", str(pl.state), "--json")
    assert log.returncode == 0, log.stderr
    runs = json.loads(log.stdout)["runs"]
    assert [r["action"] for r in runs] == ["push", "push", "push"]  # newest first
    assert runs[0]["ok"] == 2 and runs[0]["failed"] == 1 and runs[1]["release"] == rel2
    one = pl.dsas("push", "log", "--state-dir", str(pl.state), "--json", "--run",
                  str(runs[0]["id"]))
    doc = json.loads(one.stdout)
    results = {r["host"]: r for r in doc["results"]}
    assert results["n02"]["result"] != "ok" and "no SSH greeting" in results["n02"]["reason"]
    assert results["n01"]["previous"] == rel2
