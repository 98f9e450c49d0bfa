"""Fuzz the HTTP service with real sockets in the lab; afterwards a real curl is still
served correctly and the log holds no traceback (issue 13: a fuzz test per protocol)."""

from __future__ import annotations

import json
import sys

import pytest

from lab.testing import Lab
from tests.support.fuzzing import fuzz_cases
from tests.support.http_lab import HTTP, N1, PORT, SRV, start
from tests.support.paths import ROOT as REPO

pytestmark = pytest.mark.fuzz


def test_fuzzed_requests_never_break_the_http_service(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = fuzz_cases()
    m = start(lab, tmp_path, "--http-event-burst", "100000", "--http-event-rate", "10000",
              "--http-header-timeout", "2")
    r = m.cli.run([sys.executable, "-m", "tests.support.http_fuzz_client", SRV, str(PORT),
                   str(cases), "13"], cwd=REPO, timeout=cases * 0.05 + 300)
    res = json.loads(r.stdout)
    assert res["cases"] == cases, res
    assert "500" not in res["status"], res  # never an internal error
    assert m.alive()
    assert m.status(f"{HTTP}/healthz") == "200"
    out = tmp_path / "vmlinuz"
    assert m.curl("-o", str(out), "-w", "%{http_code}",
                  f"{HTTP}/images/tiny/1/vmlinuz").stdout == "200"
    assert out.read_bytes() == (m.boot / "images/tiny/1/vmlinuz").read_bytes()
    assert m.post('{"host": "n1", "stage": "ready"}', N1)[0] == "201"
    assert m.curl("-r", "0-99", f"{HTTP}/images/tiny/1/vmlinuz", "-o", "/dev/null", "-w",
                  "%{http_code} %{size_download}").stdout == "206 100"
    text = m.log_text()
    assert "Traceback" not in text, text[-4000:]
    assert len(text.splitlines()) < 200, text[-4000:]

