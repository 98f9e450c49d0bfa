"""Hostile inventories (issue 13 item 8) against a real `dsas serve` in a namespace: it
answers dig throughout a SIGHUP with each hostile file, then stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from lab.testing import Lab, require_tool
from tests.support.dns_helpers import DOMAIN, inventory_text
from tests.support.reload_support import DSAS, HOSTILE

SERVER, CLIENT = "198.18.0.1", "198.18.0.50"


def dig_a(lab_client, name: str) -> str:  # noqa: ANN001
    r = lab_client.run(["dig", f"@{SERVER}", "+short", "+time=1", "+tries=2", name],
                       check=False, timeout=15)
    return r.stdout.strip()


def wait_for(predicate, what: str, tries: int = 150) -> None:  # noqa: ANN001
    for _ in range(tries):  # bounded: 150 x 0.1 s plus the predicate's own time
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


def test_serve_survives_sighup_with_each_hostile_file_then_stops_on_sigterm(
        tmp_path: Path) -> None:
    require_tool("dig")
    with Lab() as lab:
        master, client = lab.netns("rlm"), lab.netns("rlc")
        lab.veth(master, client, f"{SERVER}/24", f"{CLIENT}/24")
        inv = tmp_path / "c.yaml"
        inv.write_text(inventory_text(3))
        log_path = tmp_path / "serve.log"
        with open(log_path, "w") as log:
            proc = master.popen([DSAS, "serve", "-i", str(inv), "--only", "dns", "--state-dir",
                                 str(tmp_path / "state"), "--boot-root", str(tmp_path)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: proc.poll() is None and dig_a(client, f"w101.{DOMAIN}")[:1].isdigit(),
                     "dsas serve answers")
            before = dig_a(client, f"w101.{DOMAIN}")
            for n, kind in enumerate(HOSTILE, start=1):
                inv.write_text(HOSTILE[kind])
                proc.send_signal(signal.SIGHUP)
                wait_for(lambda n=n: log_path.read_text().count("keeping the old one") >= n
                         or proc.poll() is not None, f"reload of {kind} refused")
                assert proc.poll() is None, f"dsas serve exited on the {kind} file:\n" \
                    + log_path.read_text()[-3000:]
                assert dig_a(client, f"w101.{DOMAIN}") == before  # the old inventory serves
            text = log_path.read_text()
            assert "nested deeper than 64" in text and "alias bomb" in text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            lab.stop(proc)
        text = log_path.read_text()
        assert "Traceback" not in text, text[-3000:]
