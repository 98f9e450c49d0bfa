"""dsas-push's node agents (push/agent.py, boot-scripts/lib/push-agent) against real nodes:
namespaces with sshd and a boot uftpd whose post-receive hook is push-agent.

An update to a node whose inventory says ``push: {multicast: true, agent: true}`` goes
with no SSH login to it: the session carries the signed order, the node's agent runs
it and reports, signed with its host key. A node whose order or report does not hold
up is done over SSH, and nothing is switched unverified.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import tests.support.push_lab as pushlab
from lab.sshfarm import MOUNT, NET, start_boot_uftpd
from lab.testing import require_tool
from tests.support.push_lab import assert_ok, make_lab, release_of, snapshot, write_tree

GROUP, PORT = "239.255.77.11", 17111
UFTP = ["--transfer", "uftp", "--uftp-interface", "br0", "--uftp-group", GROUP,
        "--uftp-port", str(PORT), "-v", "--agent-wait", "6"]


def agent_lab(lab, tmp_path: Path, agents: tuple[str, ...]):  # noqa: ANN001, ANN201
    """Three nodes; ``agents`` run uftpd from boot with push-agent as dsas-init starts
    it (PUSH_AGENT=1), and their inventory entries say so."""
    for t in ("uftp", "uftpd", "curl", "ssh-keygen"):
        require_tool(t)
    pl = make_lab(lab, tmp_path, count=3, tmpfs_mib=64)
    text = pl.inventory.read_text()
    for name in agents:
        text = text.replace(f"  {name}: {{role: web,",
                            f"  {name}: {{role: web, push: {{multicast: true, agent: true, "
                            f"root: {MOUNT}}},")
    pl.inventory.write_text(text)
    pids = {name: start_boot_uftpd(pl.node(name), pl.farm.authorized_keys, GROUP, PORT)
            for name in agents}
    return pl, pids


def logins(node) -> int:  # noqa: ANN001
    """TCP connections the node accepted so far (PassiveOpens of its network
    namespace): it listens on nothing but sshd, so these are SSH connections."""
    lines = [ln.split() for ln in node.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("PassiveOpens")])


def agent_log(node) -> str:  # noqa: ANN001
    assert node.holder is not None
    p = Path(f"/proc/{node.holder.pid}/root/run/dsas/push-agent.log")
    return p.read_text(errors="replace") if p.exists() else ""


def site(root: Path) -> None:
    write_tree(root, {f"d{i % 3}/f{i:02d}.bin": os.urandom(3_000) for i in range(30)})
    write_tree(root, {"index.html": "v1"})
    (root / "link").symlink_to("index.html")


def stop(pids: dict[str, int]) -> None:
    for pid in pids.values():
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_an_update_to_agent_nodes_needs_no_ssh_login_and_lands_verified(lab, tmp_path):
    """n01 and n02 have agents, n03 not. The first push goes by SSH everywhere (no
    history: no base). The update lands byte-exact on all three, and neither n01's nor
    n02's sshd sees a login during it; n03 is done over SSH as before. The history
    holds the agents' results like any other (previous release, release)."""
    pl, pids = agent_lab(lab, tmp_path, ("n01", "n02"))
    try:
        site(pl.src)
        r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
        assert_ok(r)
        first = release_of(r)
        before = {n.name: logins(n) for n in pl.farm.nodes}
        (pl.src / "d1/f04.bin").write_bytes(os.urandom(3_000))
        (pl.src / "new.txt").write_text("new")
        (pl.src / "d2/f05.bin").unlink()
        r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
        assert_ok(r)
        rel = release_of(r)
        expect = snapshot(pl.src)
        for n in pl.farm.nodes:
            assert pl.live(n.name) == rel, (n.name, r.stderr[-3000:])
            assert snapshot(n.root / "site") == expect, n.name
        after = {n.name: logins(n) for n in pl.farm.nodes}
        assert after["n01"] == before["n01"] and after["n02"] == before["n02"], \
            (before, after, r.stderr[-3000:])
        assert after["n03"] > before["n03"]  # no agent: its SSH login
        assert "host=n01 agent switched" in r.stderr and "host=n02 agent switched" in r.stderr
        assert "host=n03 agent" not in r.stderr
        assert f"release {rel}: order exited 0" in agent_log(pl.node("n01"))
        # nothing the session or the order left behind in the release directories
        for name in ("n01", "n02"):
            left = [p.name for p in (pl.node(name).root / "site.releases").iterdir()]
            assert sorted(left) == sorted([first, rel]), left
        from provision.state.pushes import History
        from provision.state.store import StateStore
        store = StateStore(pl.state)
        h = History(store)
        res = {x["host"]: x for x in h.results(h.runs(1)[0]["id"])}
        store.close()
        assert res["n01"]["result"] == "ok" and res["n01"]["release"] == rel
        assert res["n01"]["previous"] == first
    finally:
        stop(pids)


def test_a_forged_order_is_not_run_and_a_forged_report_is_not_taken(lab, tmp_path):
    """n01's agent trusts another key than dsas-push's (as if the order came from
    someone else): it refuses the order, and n01 is updated over SSH after the wait.
    n02's agent signs its report with a key that is not its trusted host key: the
    master refuses the report; its switch is then found over SSH ("already live").
    Both end byte-exact on the new release; the refusals are logged."""
    pl, pids = agent_lab(lab, tmp_path, ("n01", "n02"))
    try:
        site(pl.src)
        assert_ok(pl.push(str(pl.src), "--role", "web", "--delete", *UFTP))
        other = tmp_path / "other"
        os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")  # noqa: S605
        n01, n02 = pl.node("n01"), pl.node("n02")
        n01.run(["sh", "-c", f"sed -i 's|^AGENT_KEYS=.*|AGENT_KEYS={other}.pub|' "
                 "/run/dsas/push-agent.conf"])
        n02.run(["sh", "-c", f"sed -i 's|^AGENT_HOSTKEY=.*|AGENT_HOSTKEY={other}|' "
                 "/run/dsas/push-agent.conf"])
        (pl.src / "index.html").write_text("v2")
        r = pushlab.push_lands_everywhere(pl, "--role", "web", "--delete", *UFTP)
        assert "refused" in agent_log(n01) and "order exited" not in agent_log(n01)
        assert "host=n01 agent: no report" in r.stderr, r.stderr[-3000:]
        assert re.search(r"host=n02 agent report refused: signature: made by a key not "
                         r"trusted", r.stderr), r.stderr[-3000:]
        assert re.search(r"^n02\s+ok\b.*already live", r.stdout, re.M), r.stdout
    finally:
        stop(pids)


def test_an_agent_whose_live_release_is_not_the_base_changes_nothing(lab, tmp_path):
    """n01 was switched back to an older release behind dsas's back: its live release
    is not the base the history names, so its agent applies nothing (NOAGENT) and the
    SSH path does the node, verified."""
    pl, pids = agent_lab(lab, tmp_path, ("n01",))
    try:
        site(pl.src)
        r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
        assert_ok(r)
        first = release_of(r)
        (pl.src / "index.html").write_text("v2")
        r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
        assert_ok(r)
        n01 = pl.node("n01")
        n01.run(["ln", "-sfn", f"site.releases/{first}", f"{MOUNT}/site"])
        (pl.src / "index.html").write_text("v3")
        r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
        assert_ok(r)
        rel = release_of(r)
        assert pl.live("n01") == rel and snapshot(n01.root / "site") == snapshot(pl.src)
        assert "not the order's base" in r.stderr, r.stderr[-3000:]
    finally:
        stop(pids)


LISTENER = """
import json, sys
from provision.push.agent import ReportListener
exp = {a: (h, [tuple(k) for k in ks]) for a, (h, ks) in json.loads(sys.argv[2]).items()}
listener = ReportListener(sys.argv[1], exp, "RID-1", "NONCE-1")
print(listener.url, flush=True)
sys.stdin.read()
listener.close()
print(json.dumps({"reports": {h: [r.ok, r.why] for h, r in listener.reports.items()},
                  "refused": listener.refused}), flush=True)
"""


def test_the_report_listener_takes_a_report_only_from_its_node_for_this_push(lab, tmp_path):
    """dsas-push's report listener (agent.ReportListener) in the master's namespace,
    real curls from the nodes' and the master's addresses. Taken: n01's report signed
    with n01's host key, with the push's nonce and release. Refused, each counted: a
    body over 64 KiB (413), one that is not a report (400), n02's correctly signed
    report sent from n01's address (403: a report counts only from its own node), n01's
    with another nonce and n02's for another release (403). A request from an address
    that is not a target (the master's own) is closed unread."""
    require_tool("curl")
    pl, pids = agent_lab(lab, tmp_path, ())
    n01, n02 = pl.node("n01"), pl.node("n02")
    expected = {n.address: (n.name, [n.host_key_pub().split()[:2]]) for n in (n01, n02)}
    master_ip = f"{NET}.1"
    proc = pl.farm.master.popen([sys.executable, "-c", LISTENER, master_ip,
                                 json.dumps(expected)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url = proc.stdout.readline().strip()
        assert url.startswith(f"http://{master_ip}:"), url

        def report(node, name: str, rid: str = "RID-1", nonce: str = "NONCE-1") -> Path:  # noqa: ANN001
            body = tmp_path / name
            body.write_text(f"DSAS-PUSH-REPORT 1\nRID {rid}\nNONCE {nonce}\nRC 0\n"
                            f"MISSED 0\nCOMMITRC 0\nLIVE {rid}\n")
            node.run(["ssh-keygen", "-q", "-Y", "sign", "-f",
                      str(node.dir / "ssh_host_ed25519_key"), "-n", "dsas-push-report",
                      str(body)])
            signed = tmp_path / f"{name}.body"
            signed.write_bytes(body.read_bytes() + Path(f"{body}.sig").read_bytes())
            return signed

        def post(node, path: Path) -> str:  # noqa: ANN001
            r = node.run(["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}",
                          "--data-binary", f"@{path}", url], check=False)
            return r.stdout.strip()

        big = tmp_path / "big"
        big.write_bytes(b"DSAS-PUSH-REPORT 1\n" + b"x" * 70_000)
        junk = tmp_path / "junk"
        junk.write_text("hello\n")
        assert post(n01, big) == "413"
        assert post(n01, junk) == "400"
        assert post(n01, report(n02, "n02-as-n01")) == "403"
        assert post(n01, report(n01, "n01-other-nonce", nonce="NONCE-0")) == "403"
        assert post(n02, report(n02, "n02-other-rid", rid="RID-0")) == "403"
        stray = subprocess.run(pl.farm.master.cmd(
            ["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}",
             "--data-binary", f"@{report(n01, 'from-master')}", url]),
            capture_output=True, text=True, timeout=30, check=False)
        assert stray.stdout.strip() == "000" and stray.returncode != 0, stray
        assert post(n01, report(n01, "n01-good")) == "204"
        out, _ = proc.communicate("", timeout=30)
        result = json.loads(out.strip().splitlines()[-1])
        assert result == {"reports": {"n01": [True, ""]}, "refused": 5}, result
    finally:
        if proc.poll() is None:
            lab.stop(proc)
        stop(pids)
