"""The status page in a real headless Chromium, and `dsas status`, against a real
`dsas serve --only http` in a namespace.

Events are posted by the test from a client namespace that owns every node's
inventory address (each report comes from its host's own address, as the event
API requires). Push history is written to the state store through its owner
(``History``), as `dsas push` would; a balancer read through ``lbreads``, as
`dsas lb status` would, from `ipvsadm -Ln` output captured on a real director.
Screenshots go to ``build/artifacts/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.testing import Lab, Netns, require_tool
from provision.state import StateStore
from provision.state.pushes import History, HostResult
from tests.support.browser import Browser
from tests.support.paths import ROOT as REPO
from tests.support.statuspage_support import INVENTORY, SRV, VRRP_PASSWORD, record_lb_read

ARTIFACTS = REPO / "build" / "artifacts"
HTTP = f"http://{SRV}:8080"

NODES = {"lb1": "198.18.4.2", "lb2": "198.18.4.3", "w1": "198.18.4.11", "w2": "198.18.4.12",
         "w10": "198.18.4.20", "d1": "198.18.4.21"}
FULL_BOOT = ("dhcp", "kernel", "initramfs", "dsas.conf", "image", "configured", "ready")
HOSTILE = '<img src=x onerror="window.pwned=1"><b>disk /dev/sdb missing</b>'


@dataclass
class Env:
    lab: Lab
    srv: Netns
    cli: Netns
    state: Path
    tmp: Path
    browser: Browser

    def post(self, host: str, stage: str, reason: str | None = None) -> str:
        body = {"host": host, "stage": stage} | ({"reason": reason} if reason else {})
        r = self.cli.run(["curl", "-sS", "--interface", NODES[host], "-H",
                          "Content-Type: application/json", "-d", json.dumps(body), "-o",
                          "/dev/null", "-w", "%{http_code}", f"{HTTP}/api/v1/events"],
                         timeout=30, check=False)
        return r.stdout

    def dsas_status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli.run([str(REPO / ".venv/bin/dsas"), "status", "--master", HTTP, *args],
                            timeout=60, check=False)

    def api(self) -> dict:
        r = self.cli.run(["curl", "-sS", f"{HTTP}/api/v1/status"], timeout=30)
        return json.loads(r.stdout)


def record_pushes(state: Path) -> None:
    """Two pushes of /srv/site: w1 took both (current), w2 only the first (behind)."""
    hist = History(StateStore(state))
    run = hist.start("push", "/srv/site", ["w1", "w2"], release="r1")
    hist.finish(run, [HostResult("w1", True, "r1"), HostResult("w2", True, "r1")], "r1")
    run = hist.start("push", "/srv/site", ["w1", "w2"], release="r2")
    hist.finish(run, [HostResult("w1", True, "r2", "r1"),
                      HostResult("w2", False, "r1", "r1", reason="rsync: timeout")], "r2")
    hist.store.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_tool("curl")
    tmp = tmp_path_factory.mktemp("statuspage")
    with Lab() as lab:
        srv, cli = lab.netns("stsrv"), lab.netns("stcli")
        srv_if, cli_if = lab.veth(srv, cli, f"{SRV}/24", f"{NODES['w1']}/24")
        for addr in NODES.values():
            if addr != NODES["w1"]:
                cli.addr(cli_if, f"{addr}/24")
        (tmp / "boot").mkdir()
        inv = tmp / "lab.yaml"
        inv.write_text(INVENTORY)
        state = tmp / "state"
        record_pushes(state)
        with open(tmp / "serve.log", "wb") as log:
            srv.popen([str(REPO / ".venv/bin/dsas"), "serve", "-i", str(inv), "--only", "http",
                       "--interface", srv_if, "--boot-root", str(tmp / "boot"), "--state-dir",
                       str(state), "-v",
                       # the viewer cap is under test here, not the per-address cap (64)
                       "--http-max-per-client", "200"], stdout=log, stderr=subprocess.STDOUT)
        srv.wait_port(8080, "tcp")
        e = Env(lab, srv, cli, state, tmp, None)  # type: ignore[arg-type]
        for stage in FULL_BOOT:
            assert e.post("w1", stage) == "201"
        for stage in ("dhcp", "kernel"):
            assert e.post("w2", stage) == "201"
        assert e.post("lb1", "ready") == "201"
        e.browser = Browser(cli.name, tmp / "chromium")
        try:
            yield e
        finally:
            e.browser.quit()
            print("serve log tail:\n", (tmp / "serve.log").read_text()[-3000:])


ROWS_JS = """return [...document.querySelectorAll('#hosts tbody tr')].map(tr => ({
  host: tr.dataset.host, cls: tr.className,
  stage: tr.querySelector('td.stage .v').firstChild.textContent,
  reason: (tr.querySelector('td.stage .reason') || {}).textContent || null,
  release: tr.querySelector('td.release').textContent,
  pools: tr.querySelector('td.pools').textContent,
  bg: getComputedStyle(tr.querySelector('td')).backgroundColor}));"""


def rows(env: Env) -> list[dict]:
    return env.browser.js(ROWS_JS)


def open_index(env: Env, query: str = "") -> None:
    env.browser.get(f"{HTTP}/{query}")
    env.browser.wait_js("return document.body.dataset.ready === '1' &&"
                        " document.getElementById('live').classList.contains('on')",
                        "the page and its live stream")


def red(css_rgb: str) -> bool:
    r, g, b = (int(float(x)) for x in css_rgb[css_rgb.index("(") + 1:-1].split(",")[:3])
    return r > g + 30 and r > b + 30


def test_every_row_shows_its_stage(env: Env) -> None:
    open_index(env)
    got = {r["host"]: r for r in rows(env)}
    assert list(got) == ["d1", "lb1", "lb2", "m1", "w1", "w2", "w10"]  # natural host order
    assert {h: r["stage"] for h, r in got.items()} == {
        "d1": "-", "lb1": "ready", "lb2": "-", "m1": "-", "w1": "ready", "w2": "kernel",
        "w10": "-"}
    assert got["w1"]["cls"] == "state-ready" and got["w2"]["cls"] == "state-booting"
    assert got["lb2"]["cls"] == "state-unknown"
    assert "r2" in got["w1"]["release"] and "current" in got["w1"]["release"]
    assert "r1" in got["w2"]["release"] and "behind" in got["w2"]["release"]
    assert "www" in got["w1"]["pools"] and "not read" in got["w1"]["pools"]
    assert not red(got["w1"]["bg"])


def test_posted_failure_turns_red_without_reload(env: Env) -> None:
    open_index(env)
    env.browser.js("window.__noReload = 'still here'")
    t0 = time.monotonic()
    assert env.post("d1", "failed", HOSTILE) == "201"
    env.browser.wait_js("const tr = document.querySelector('#hosts tr[data-host=\"d1\"]');"
                        " return tr && tr.classList.contains('state-failed');",
                        "d1 turning failed", timeout=10)
    latency = time.monotonic() - t0
    print(f"failed event -> red row: {latency * 1000:.0f} ms (post to paint, incl. curl)")
    assert env.browser.js("return window.__noReload") == "still here"  # no reload
    d1 = {r["host"]: r for r in rows(env)}["d1"]
    assert d1["stage"] == "failed" and red(d1["bg"])
    # The report's text is shown as text: no element was made from it, nothing ran.
    assert d1["reason"] == HOSTILE
    assert env.browser.js("return document.querySelectorAll('#hosts img, #hosts b').length"
                          " + (window.pwned ? 100 : 0)") == 0
    assert env.browser.js("return document.querySelector('.count.state-failed strong')"
                          ".textContent") == "1"
    shot = env.browser.screenshot(ARTIFACTS / "status-page.png")
    print(f"screenshot: {shot}")


def test_filters_and_sorting(env: Env) -> None:
    open_index(env)
    b = env.browser
    names = "return [...document.querySelectorAll('#hosts tbody tr')].map(t => t.dataset.host)"
    b.select("#role", "web")
    assert b.wait_js(names + ".join() === 'w1,w2,w10' && 1", "role filter")
    assert "role=web" in b.js("return location.search")
    b.select("#role", "")
    b.select("#state", "booting")
    assert b.js(names) == ["w2"]
    b.select("#state", "unknown")
    assert set(b.js(names)) - {"d1"} == {"lb2", "m1", "w10"}  # d1: unknown until it fails
    b.select("#state", "")
    b.click("th[data-sort='host']")  # already sorted by host: the click reverses it
    assert b.js(names) == ["w10", "w2", "w1", "m1", "lb2", "lb1", "d1"]
    b.click("th[data-sort='stage']")  # stage order: unknown, failed, dhcp ... ready
    order = b.js(names)
    ranks = {h: i for i, h in enumerate(order)}
    assert ranks["w2"] < ranks["w1"] and ranks["lb2"] < ranks["w2"]
    assert b.js("return document.querySelector(\"th[data-sort='stage']\")"
                ".getAttribute('aria-sort')") == "ascending"
    # Filters survive a reload: they live in the address.
    b.select("#role", "lvs")
    open_index(env, "?" + b.js("return location.search.slice(1)"))
    assert b.js(names) == ["lb2", "lb1"]  # still by stage: lb2 unknown, lb1 ready
    assert b.js("return [document.getElementById('role').value,"
                " document.getElementById('sort').value]") == ["lvs", "stage"]


def test_host_page_shows_timeline_events_and_masked_files(env: Env) -> None:
    b = env.browser
    b.get(f"{HTTP}/status/host/w1")
    b.wait_js("return document.body.dataset.ready === '1'", "the host page")
    segs = b.js("const t = document.getElementById('timeline').getBoundingClientRect();"
                " return [...document.querySelectorAll('#timeline .seg')].map(s => {"
                " const r = s.getBoundingClientRect();"
                " return [s.dataset.stage, r.left - t.left, r.right - t.left, t.width]; })")
    assert [s[0] for s in segs] == list(FULL_BOOT)
    lefts = [s[1] for s in segs]
    assert lefts == sorted(lefts) and lefts[0] <= 2  # on one time axis, in order
    assert all(s[2] <= s[3] + 0.5 for s in segs), segs[-2:]  # all inside the axis
    assert b.js("return document.querySelectorAll('#events tbody tr').length") == len(FULL_BOOT)
    conf = b.js("return document.querySelector('#files pre').textContent")
    assert "SYSTEMNAME=w1\n" in conf
    env.browser.screenshot(ARTIFACTS / "status-host-w1.png")
    # A director's page shows its keepalived.conf, with the VRRP password masked.
    b.get(f"{HTTP}/status/host/lb1")
    b.wait_js("return document.body.dataset.ready === '1' &&"
              " document.querySelectorAll('#files pre').length === 2", "lb1's files")
    text = b.js("return document.getElementById('files').textContent")
    assert "auth_pass ********" in text and VRRP_PASSWORD not in text
    assert VRRP_PASSWORD not in env.cli.run(["curl", "-sS", f"{HTTP}/api/v1/status/hosts/lb1"]
                                            ).stdout
    # A failed host's page is red and lives: a new report shows without a reload.
    b.get(f"{HTTP}/status/host/w2")
    b.wait_js("return document.body.dataset.ready === '1'", "w2's page")
    assert env.post("w2", "failed", "kernel panic: VFS") == "201"
    b.wait_js("return document.body.classList.contains('state-failed') &&"
              " document.getElementById('reason').textContent === 'kernel panic: VFS'",
              "w2 failing on its page", timeout=10)
    stages = b.js("return [...document.querySelectorAll('#timeline .seg')]"
                  ".map(s => s.dataset.stage)")
    assert stages == ["dhcp", "kernel", "failed"]
    assert env.post("w2", "dhcp") == "201"  # reboot: a new timeline from its dhcp
    b.wait_js("return [...document.querySelectorAll('#timeline .seg')].length === 1",
              "the new boot's timeline", timeout=10)
    assert env.post("w2", "kernel") == "201"  # back to booting for the other tests


def test_discoveries_and_pushes_show_live(env: Env) -> None:
    """Tables other processes write (DHCP sightings, `dsas push`) reach the page too."""
    from provision.policy.leases import Sighting
    from provision.state.leases import LeaseJournal

    open_index(env)
    env.browser.js("window.__noReload = 'still here'")
    s = StateStore(env.state)
    LeaseJournal(s).commit([Sighting("52:54:00:99:00:07", time.time(), 7, "PXEClient:Arch:00007",
                                     "", "", "eth0", "inside")], time.time())
    hist = History(s)
    run = hist.start("push", "/srv/site", ["w1", "w2"], release="r3")
    hist.finish(run, [HostResult("w1", True, "r3", "r2"), HostResult("w2", True, "r3", "r1")],
                "r3")
    s.close()
    env.browser.wait_js("return !!document.querySelector("
                        "'#discovered tr[data-mac=\"52:54:00:99:00:07\"]')",
                        "the discovered machine", timeout=10)
    env.browser.wait_js("const t = document.querySelector("
                        "'#hosts tr[data-host=\"w2\"] td.release').textContent;"
                        " return t.includes('r3') && t.includes('current')",
                        "w2's new release", timeout=10)
    assert env.browser.js("return window.__noReload") == "still here"
    w1 = {r["host"]: r for r in rows(env)}["w1"]
    assert "r3" in w1["release"] and "current" in w1["release"]


def test_a_rollout_shows_live_while_it_runs(env: Env) -> None:
    """Issue 23: the running rollout appears, follows its hosts and goes when it ends,
    without a reload; one whose dsas is gone says killed."""
    from provision.rollout.owner import me
    from provision.state.rollout import Owner, RolloutStore

    open_index(env)
    assert env.browser.js("return document.getElementById('rollout').hidden") is True
    store = StateStore(env.state)
    rs = RolloutStore(store)
    gone = Owner(me().pid, me().start + 1, me().host)  # the PID is another process's now
    run = rs.start("tiny", "8", "7", False, {}, [("w1", 0, "7"), ("w2", 1, "7")], gone)
    rs.host(run, "w1", "moving", "netboot: moving to 8")
    env.browser.wait_js("const r = document.getElementById('rollout');"
                        " return !r.hidden && r.textContent.includes('w1 moving');",
                        "the rollout section", timeout=10)
    text = env.browser.js("return document.getElementById('rollout').textContent")
    assert f"Rollout {run}: image tiny to 8" in text and "0 of 2 hosts moved" in text
    assert f"(killed: owner PID {gone.pid} gone; --resume goes on)" in text, text
    rs.host(run, "w1", "done", "on 8")
    env.browser.wait_js("return document.getElementById('rollout').textContent"
                        ".includes('1 of 2 hosts moved')", "the rollout's progress", timeout=10)
    rs.finish(run, "done")
    env.browser.wait_js("return document.getElementById('rollout').hidden",
                        "the rollout section gone", timeout=10)
    store.close()


def test_pools_show_the_last_lb_read(env: Env) -> None:
    """A `dsas lb status` read lands in the store: every pool shows it without a
    reload, with its director and age; an unreachable director says why."""
    open_index(env)
    env.browser.js("window.__noReload = 'still here'")
    assert "not read" in {r["host"]: r for r in rows(env)}["w2"]["pools"]
    s = StateStore(env.state)
    record_lb_read(s, time.time())
    s.close()
    env.browser.wait_js("return document.querySelector('#hosts tr[data-host=\"w2\"] td.pools')"
                        ".textContent.includes('up w1 0/102 conn')", "w2's pool as read",
                        timeout=10)
    assert env.browser.js("return window.__noReload") == "still here"
    got = {r["host"]: r["pools"] for r in rows(env)}
    assert re.search(r"www up w1 0/102 conn read \d+s ago from lb1$", got["w2"]), got["w2"]
    assert re.search(r"www out read \d+s ago from lb1$", got["w1"]), got["w1"]
    assert re.search(r"www \(director\) holds the VIP 0/102 conn read \d+s ago from lb1$",
                     got["lb1"]), got["lb1"]
    assert re.search(r"www \(director\) director lb2 unreachable: connection refused on port 22"
                     r" read \d+s ago$", got["lb2"]), got["lb2"]
    assert re.search(r"www out read \d+s ago from lb1$", got["w10"]), got["w10"]  # not in IPVS
    b = env.browser
    b.get(f"{HTTP}/status/host/w2")
    b.wait_js("return document.body.dataset.ready === '1'", "w2's page")
    cell = b.js("return document.querySelector('#pools td.pool-health').textContent")
    assert re.fullmatch(r"up w1 0/102 conn read \d+s ago from lb1", cell), cell
    env.browser.screenshot(ARTIFACTS / "status-host-w2-pools.png")


def test_phone_and_dark_mode_screenshots(env: Env) -> None:
    b = Browser(env.cli.name, env.tmp / "chromium-phone", width=390, height=1400, dark=True,
                phone=True)
    try:
        b.get(f"{HTTP}/")
        b.wait_js("return document.body.dataset.ready === '1'", "the page on a phone")
        # Cards, not a table: the header row is hidden and every cell is labelled.
        assert b.js("return getComputedStyle(document.querySelector('#hosts thead')).display"
                    ) == "none"
        bg = b.js("return getComputedStyle(document.body).backgroundColor")
        assert not red(bg) and sum(int(x) for x in bg[4:-1].split(",")) < 150  # dark
        wide = b.js("return document.documentElement.scrollWidth")
        assert wide <= 400, f"the page is {wide}px wide on a 390px phone"
        print("screenshot:", b.screenshot(ARTIFACTS / "status-page-phone-dark.png"))
    finally:
        b.quit()


def test_page_is_read_only_and_self_contained(env: Env) -> None:
    r = env.cli.run(["curl", "-sS", "-i", f"{HTTP}/"], timeout=30).stdout
    assert "Content-Security-Policy: default-src 'none'; script-src 'self'" in r
    for path in ("/", "/api/v1/status"):
        code = env.cli.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X",
                            "POST", f"{HTTP}{path}"], timeout=30).stdout
        assert code == "405", (path, code)
    assert env.cli.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        f"{HTTP}/status/host/ghost"], timeout=30).stdout == "404"
    assets = re.findall(r'(?:src|href)="([^"]*)"', r)
    assert assets and all(a.startswith("/") for a in assets), assets  # no CDN, our own
    for a in assets:
        if a.startswith("/status/static/"):
            assert env.cli.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                f"{HTTP}{a}"], timeout=30).stdout == "200", a


def test_dsas_status_matches_the_page(env: Env) -> None:
    doc = env.api()
    want = {v["host"]: v for v in doc["hosts"]}
    r = env.dsas_status()
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "ROLE", "STATE", "STAGE"]
    got = {ln.split()[0]: ln.split() for ln in lines[1:-1]}
    assert set(got) == set(want)
    for host, v in want.items():
        assert got[host][1] == v["role"] and got[host][2] == v["state"], got[host]
        assert got[host][3].rstrip(":") == (v["stage"] or "-"), got[host]
    assert got["w1"][7:9] == [want["w1"]["release"], "current"]  # RELEASE, DRIFT
    failed = [h for h, v in want.items() if v["state"] == "failed"]
    assert r.returncode == (1 if failed else 0), r.stderr
    assert lines[-1].startswith(f"{len(want)} hosts:")
    js = json.loads(env.dsas_status("--json").stdout)
    assert {v["host"]: (v["state"], v["stage"]) for v in js["hosts"]} == {
        h: (v["state"], v["stage"]) for h, v in want.items()}
    web = env.dsas_status("--role", "web").stdout.splitlines()
    assert [ln.split()[0] for ln in web[1:-1]] == ["w1", "w2", "w10"]
    watch = env.dsas_status("--watch", "--count", "2", "--interval", "0.2", "--role", "lvs")
    assert watch.stdout.count("HOST  ") == 2 and watch.stdout.count("\nlb1 ") == 2
    bad = env.cli.run([str(REPO / ".venv/bin/dsas"), "status", "--master",
                       "http://198.18.4.99:8080", "--timeout", "1"], timeout=60, check=False)
    assert bad.returncode == 1 and "cannot reach the master" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_viewers_are_capped_and_freed(env: Env) -> None:
    """At most MAX_VIEWERS streams; the next one gets 503 and the service goes on."""
    import socket

    from provision.services.statuspage import MAX_VIEWERS
    from tests.support.netns_thread import in_netns

    def flood() -> tuple[list[str], str]:
        socks, codes = [], []
        try:
            for _ in range(MAX_VIEWERS + 2):  # bounded: a few more than the cap
                s = socket.create_connection((SRV, 8080), timeout=10)
                socks.append(s)
                s.sendall(b"GET /api/v1/status/stream HTTP/1.1\r\nHost: x\r\n\r\n")
                codes.append(s.recv(64).split(b" ")[1].decode())
                if codes[-1] == "503":
                    break
        finally:
            for s in socks:
                s.close()
        return codes, ""

    codes, _ = in_netns(env.cli.name, flood, 120)
    assert codes[-1] == "503" and set(codes[:-1]) == {"200"} and len(codes) <= MAX_VIEWERS + 1
    # Freed: the server notices the closed streams (bounded wait), a browser gets in.
    deadline = time.monotonic() + 20
    viewers = None
    while time.monotonic() < deadline:
        metrics = env.cli.run(["curl", "-sS", f"{HTTP}/metrics"], timeout=30).stdout
        viewers = next((float(ln.split()[-1]) for ln in metrics.splitlines()
                        if ln.startswith("dsas_status_viewers ")), None)
        if viewers is not None and viewers <= 1:  # at most our browser's own stream
            break
        time.sleep(0.2)
    assert viewers is not None and viewers <= 1, viewers
    open_index(env)


def test_serve_stops_promptly_with_viewers_connected(env: Env) -> None:
    """SIGTERM while a browser listens: the stream ends, the process exits 0 (not killed)."""
    open_index(env)
    serve = env.lab.procs[-1]
    assert env.lab.stop(serve, timeout=10) == 0
