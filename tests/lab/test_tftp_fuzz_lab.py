"""TFTP fuzzing of a real `dsas serve --only tftp` in a namespace (marker ``fuzz``).

``tests.support.tftp_fuzz_client`` sends ``fuzz_cases()`` malformed datagrams (see its
docstring) from a client namespace, and fuzzes the transfers its few valid
requests start. Afterwards the server still runs, tftp-hpa fetches a file
byte-exact, and the server's log has no traceback and no line a client forged
(every line is one of the logger's, a client's newline stays escaped).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.bootfiles import INVENTORY
from lab.testing import Lab, require_tool
from tests.support.bootfiles_lab import CLI, SRV, make_tree, sha_of
from tests.support.fuzzing import fuzz_cases
from tests.support.paths import ROOT as REPO

pytestmark = pytest.mark.fuzz

NAMES = ["pxelinux.0", "images/tiny/1/vmlinuz", "images/tiny/1/initrd.img", "notes.txt",
         "empty.bin", "hosts/n1/dsas.conf", "pxelinux.cfg/01-52-54-00-04-00-11"]
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"[\w.]+: ")


def test_tftp_fuzz_then_tftp_hpa_still_served(tmp_path: Path) -> None:
    require_tool("tftp")
    cases = fuzz_cases()
    with Lab() as lab:
        srv, cli = lab.netns("fzsrv"), lab.netns("fzcli")
        srv_if, _ = lab.veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
        root = tmp_path / "boot"
        root.mkdir()
        files = make_tree(root)
        inv = tmp_path / "lab.yaml"
        inv.write_text(INVENTORY)
        log_path = tmp_path / "serve.log"
        with open(log_path, "wb") as log:
            server = srv.popen([str(REPO / ".venv/bin/dsas"), "serve", "-i", str(inv),
                                "--only", "tftp", "--interface", srv_if, "--boot-root",
                                str(root), "--state-dir", str(tmp_path / "state"), "-v",
                                "--tftp-timeout", "1", "--tftp-max-per-client", "64"],
                               stdout=log, stderr=subprocess.STDOUT)
        srv.wait_port(69, "udp")
        r = cli.run([sys.executable, "-m", "tests.support.tftp_fuzz_client", SRV, str(cases), "13",
                     *NAMES], timeout=600, cwd=REPO, check=False)
        assert r.returncode == 0, r.stderr[-3000:]
        stats = json.loads(r.stdout)
        print(f"tftp fuzz: {stats}")
        assert stats["sent"] == cases and stats["transfers_fuzzed"] > 0, stats
        assert server.poll() is None, "the server exited"
        # The fuzzed transfers give up after 1 s; tftp-hpa is served meanwhile or after
        # (a "busy" answer is retried, bounded).
        out = tmp_path / "vmlinuz"
        got = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "images/tiny/1/vmlinuz",
                           str(out)], timeout=60, check=False)
            if not got.stderr and "Error" not in got.stdout:
                break
            time.sleep(0.5)
        assert got is not None and not got.stderr, got.stdout + got.stderr
        assert sha_of(out) == sha_of(root / "images/tiny/1/vmlinuz")
        assert files["images/tiny/1/vmlinuz"] == out.read_bytes()
        assert server.poll() is None, "the server exited"
        text = log_path.read_text(errors="replace")
        assert "Traceback" not in text, text[text.index("Traceback") - 2000:][:6000]
        forged = [line for line in text.splitlines() if not LINE.match(line)]
        assert not forged, forged[:10]
        assert "CRITICAL forged" in text  # the names that tried it were logged, escaped
        refused = text.count("tftp: refused")
        print(f"tftp fuzz: {refused} refusals logged, {text.count('tftp: ok ')} transfers ok")
