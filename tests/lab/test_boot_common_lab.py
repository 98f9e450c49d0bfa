"""The boot scripts' shared functions (boot-scripts/lib/common.sh: say, json_escape,
event_text, post_event) as each script has them: the netboot initramfs's /init under
busybox sh (and dash, the Debian nodes' /bin/sh), dsas-init under bash. A script's
definitions are its own text up to its `main "$@"`, run with DSAS_LIB at boot-scripts/lib.
The PATH is busybox's applets, as in the initramfs and the tiny image (wget), plus the
real curl where an image has it (base, web). Reports go over real HTTP to
tests/fake_master.py in a lab namespace, and the master's own parser
(policy.httpfiles.parse_event) judges them; a fake curl or wget shows what was on the
command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from lab.testing import Lab, Netns
from provision.inventory import load
from provision.policy import httpfiles
from tests.support.dsas_init_support import DSAS_INIT, DSAS_LIB
from tests.support.paths import ROOT

INIT = ROOT / "boot-scripts" / "initramfs" / "init"
SMALL = ROOT / "tests" / "fixtures" / "small.yaml"
HOST = "w1"  # in small.yaml; the event comes from its address

# (id, script, shell, prefix of its console lines)
SCRIPTS = [
    ("init-busybox", INIT, ("busybox", "sh"), "dsas"),
    ("init-dash", INIT, ("dash",), "dsas"),
    ("dsas-init-bash", DSAS_INIT, ("bash",), "dsas-init"),
]
BY_ID = {s[0]: s for s in SCRIPTS}

# What common.sh runs, and what the fakes and the scripts' report wrappers need.
APPLETS = ("cat", "cut", "head", "hostname", "mktemp", "rm", "sed", "sleep", "timeout", "tr",
           "wget")

# Records its arguments and the body it was asked to post, then succeeds. It reads the
# body as curl (--data-binary @FILE, --data STR) and wget (--post-file FILE,
# --post-data STR) would.
FAKE_POST = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_DIR/argv"
while [ $# -gt 0 ]; do
    case "$1" in
        --data-binary|--post-file) f=$2; cat "${f#@}" > "$FAKE_DIR/body"; shift ;;
        --data|--post-data) printf '%s' "$2" > "$FAKE_DIR/body"; shift ;;
    esac
    shift
done
exit 0
"""

HOSTILE = [
    "plain words",
    'a "quoted" word',
    "back\\slash and \\n spelled out",
    "tab\there, newline\nthere, return\r",
    "controls \x01\x02\x1b[31m\x1f and DEL \x7f",
    "UTF-8: é ü ☃",
    "glob * ? [a-z] ~ and $HOME `id` $(id) %s %d",
    "-n",
    "trailing newline\n",
    "'single'",
    "",
]


def definitions(script: Path, tmp: Path) -> Path:
    """The script's text up to its main call: variables, the shared file, functions."""
    head, sep, _ = script.read_text().rpartition('\nmain "$@"\n')
    assert sep, f"{script}: no `main \"$@\"` line"
    out = tmp / f"{script.name}.defs"
    out.write_text(head + "\n")
    return out


def busybox_bin(tmp: Path) -> Path:
    """A bin directory of busybox applets (what the initramfs and the tiny image have)."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox is not installed (Debian package busybox-static)"
    d = tmp / "bbbin"
    if not d.exists():
        d.mkdir()
        for applet in APPLETS:
            (d / applet).symlink_to(busybox)
    return d


def run(which: str, tmp: Path, code: str, *args: str, path: str = "",
        env: dict[str, str] | None = None, ns: Netns | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """Run CODE with the script's definitions loaded, ARGS as $1... (in NS, if given);
    PATH is set after loading (/init sets its own); temporary files go to tmp/tmpdir."""
    _, script, shell, _ = BY_ID[which]
    assert shutil.which(shell[0]), f"{shell[0]} is not installed"
    defs = definitions(script, tmp)
    prog = f'. "{defs}"\nPATH="$TEST_PATH"\n{code}\n'
    (tmp / "tmpdir").mkdir(exist_ok=True)
    full_env = {"PATH": "/usr/bin:/bin", "DSAS_LIB": str(DSAS_LIB), "TMPDIR": str(tmp / "tmpdir"),
                "TEST_PATH": path or str(busybox_bin(tmp)), **(env or {})}
    argv = [*shell, "-c", prog, "test", *args]
    if ns is not None:
        return cast("subprocess.CompletedProcess[bytes]", ns.run(  # text=False: bytes
            ["env", "-i", *[f"{k}={v}" for k, v in full_env.items()], *argv],
            check=False, text=False))
    return subprocess.run(argv, env=full_env, capture_output=True, timeout=30)


def fake_transport(tmp: Path, tool: str) -> str:
    """A PATH whose `tool` (curl or wget) is the fake, the rest busybox (no real curl).
    `timeout` is a stand-in too: busybox's would run its own wget applet."""
    fakes = tmp / "fakes"
    fakes.mkdir(exist_ok=True)
    (fakes / tool).write_text(FAKE_POST)
    (fakes / "timeout").write_text('#!/bin/sh\nshift\nexec "$@"\n')
    for f in (tool, "timeout"):
        (fakes / f).chmod(0o755)
    return f"{fakes}:{busybox_bin(tmp)}"


def master_view(text: str) -> str:
    """What event_text promises: tabs and line ends to spaces, any other byte outside
    printable ASCII a '?', at most MAX_REASON characters (a longer one ends in ...)."""
    out = "".join(" " if b in b"\t\n\r" else chr(b) if 0x20 <= b <= 0x7e else "?"
                  for b in text.encode())
    limit = httpfiles.MAX_REASON
    return out if len(out) <= limit else out[:limit - 3] + "..."


def report_code(which: str, master: str) -> str:
    """Call the script's own report, the master and host set the way the script finds
    them (/init: MASTER and HOST; dsas-init: DSAS_MASTER and SYSTEMNAME)."""
    if which.startswith("init"):
        return f'MASTER={master} HOST={HOST}\nreport "$1" "$2" "$3"'
    return f'SYSTEMNAME={HOST} CHECK_ONLY=0\nreport "$1" "$2" "$3"'


def master_parses(body: bytes, peer: str = "198.18.42.1") -> httpfiles.Event:
    """policy.httpfiles.parse_event, with PEER as an address leased to the host."""
    return httpfiles.parse_event(body, peer, load(SMALL), lambda host: {peer})


# -- json_escape and say -----------------------------------------------------------

@pytest.mark.parametrize("which", BY_ID)
def test_json_escape_round_trips_any_text(which: str, tmp_path: Path) -> None:
    """Every text comes back from a JSON parser as it went in: a quote and a backslash
    escaped, a control character (newline, tab, ESC, DEL) as \\u00XX, never dropped."""
    for text in HOSTILE:
        out = run(which, tmp_path, 'json_escape "$1"', text)
        assert out.returncode == 0, out.stderr
        assert json.loads(b'"' + out.stdout + b'"') == text, (text, out.stdout)


@pytest.mark.parametrize("which", BY_ID)
def test_say_prints_its_words_as_they_are(which: str, tmp_path: Path) -> None:
    """The prefix names the script; a backslash or a % in the words is printed, not
    interpreted (dash's echo would turn \\n into a line end)."""
    prefix = BY_ID[which][3]
    out = run(which, tmp_path, 'say "$1" "$2"', "C:\\new\\tab %s", "-n \\c end")
    assert out.stdout.decode() == f"{prefix}: C:\\new\\tab %s -n \\c end\n"


@pytest.mark.parametrize("which", BY_ID)
def test_event_text_keeps_to_the_masters_limits(which: str, tmp_path: Path) -> None:
    limit = httpfiles.MAX_REASON
    for text in [*HOSTILE, "x" * limit, "y" * (limit + 1), "é" * limit, "z\n" * 150]:
        out = run(which, tmp_path, 'event_text "$1"', text)
        assert out.stdout.decode() == master_view(text), text


# -- report: what reaches the master ---------------------------------------------

# (script, what posts): busybox sh runs its own wget applet whatever PATH says; dsas-init
# uses curl where the image has it (base, web), else busybox's wget (tiny).
TRANSPORTS = [("init-busybox", "wget"), ("init-dash", "wget"), ("dsas-init-bash", "curl"),
              ("dsas-init-bash", "wget")]


class Master:
    """tests/fake_master.py in a lab namespace; the shell runs there too."""

    def __init__(self, lab: Lab, tmp: Path):
        self.ns = lab.netns("bootlib")
        lab.bridge(self.ns, "br0", "198.18.42.1/24")
        self.events = tmp / "events.jsonl"
        self.events.write_text("")
        (tmp / "www").mkdir()
        self.ns.popen([sys.executable, str(ROOT / "tests" / "support" / "fake_master.py"),
                       str(tmp / "www"),
                       str(self.events), "198.18.42.1", "8080"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ns.wait_port(8080, "tcp")
        self.url = "http://198.18.42.1:8080"

    def received(self) -> list[httpfiles.Event]:
        """Each event as the real master's parser reads it (from the address it came from)."""
        out = []
        for line in self.events.read_text().splitlines():
            doc = json.loads(line)
            del doc["t"]
            peer = doc.pop("peer")
            out.append(master_parses(json.dumps(doc).encode(), peer))
        return out


def transport_path(tmp: Path, tool: str) -> str:
    """busybox's applets, and the real curl when the tool is curl."""
    bb = str(busybox_bin(tmp))
    if tool == "wget":
        return bb
    curl = shutil.which("curl")
    assert curl, "curl is not installed"
    d = tmp / "curlbin"
    d.mkdir()
    (d / "curl").symlink_to(curl)
    return f"{d}:{bb}"


@pytest.mark.parametrize("which,tool", TRANSPORTS)
def test_report_posts_an_event_the_master_accepts(which: str, tool: str, lab: Lab,
                                                  tmp_path: Path) -> None:
    """A failure's detail can be long and hold anything (a driver list, a command's
    output): the master takes the event, with the detail cut to its limit."""
    master = Master(lab, tmp_path)
    detail = ('BOND_MODE: "fast\\est"\tis not\na mode; drivers: ' + "virtio_net é " * 30)
    out = run(which, tmp_path, report_code(which, master.url), "failed", detail, "",
              path=transport_path(tmp_path, tool), env={"DSAS_MASTER": master.url},
              ns=master.ns)
    assert out.returncode == 0 and out.stdout == b"", out.stdout + out.stderr
    [ev] = master.received()
    assert (ev.host, ev.stage) == (HOST, "failed")
    assert ev.reason == master_view(detail) and len(ev.reason) == httpfiles.MAX_REASON
    assert list((tmp_path / "tmpdir").iterdir()) == []  # the body's file is gone


@pytest.mark.parametrize("which,tool", TRANSPORTS)
def test_report_is_best_effort(which: str, tool: str, lab: Lab, tmp_path: Path) -> None:
    """No master: nothing is posted. A master that does not answer: the console says
    so and the caller goes on (status 0: dsas-init's last report sets its exit code)."""
    master = Master(lab, tmp_path)
    path = transport_path(tmp_path, tool)
    out = run(which, tmp_path, report_code(which, ""), "failed", "x", "", path=path,
              env={"DSAS_MASTER": ""}, ns=master.ns)
    assert out.returncode == 0 and out.stdout == b"", out.stdout + out.stderr
    gone = "http://198.18.42.1:8081"  # nothing listens there
    out = run(which, tmp_path, report_code(which, gone), "failed", "x", "", path=path,
              env={"DSAS_MASTER": gone}, ns=master.ns)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == (f"{BY_ID[which][3]}: could not report stage 'failed' to "
                                   f"{gone}/api/v1/events\n")
    assert master.received() == [] and list((tmp_path / "tmpdir").iterdir()) == []


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_ready_report_keeps_the_token_off_the_command_line(tool: str, tmp_path: Path) -> None:
    """The boot token goes to the master in the body only: a command line is in every
    local process's view (ps, /proc/PID/cmdline) while curl or wget runs."""
    root = tmp_path / "root"
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
        "root@w1\n")
    token = "0123456789abcdef0123456789abcdef"
    code = (f'SYSTEMNAME={HOST} CHECK_ONLY=0 DSAS_BOOT_ID=65a1b2c3-0123456789ab '
            f'DSAS_BOOT_TOKEN={token}\nreport ready "bond0=198.18.0.21/24" "$(host_key_field)"')
    out = run("dsas-init-bash", tmp_path, code, path=fake_transport(tmp_path, tool),
              env={"FAKE_DIR": str(tmp_path), "DSAS_MASTER": "http://198.18.0.1",
                   "DSAS_ROOT": str(root)})
    assert out.returncode == 0, out.stdout + out.stderr
    argv = (tmp_path / "argv").read_text()
    assert token not in argv and "ssh-ed25519" not in argv, argv
    ev = master_parses((tmp_path / "body").read_bytes())
    assert ev.stage == "ready" and ev.token == token and ev.boot_id == "65a1b2c3-0123456789ab"
    assert ev.ssh_key is not None and ev.reason == "bond0=198.18.0.21/24"
