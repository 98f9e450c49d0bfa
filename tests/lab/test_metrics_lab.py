"""/metrics of a running `dsas serve`, scraped by curl and read by prometheus_client's
own parser: HELP and TYPE for every metric, the standard content type, the process
metrics and the histograms (boot stage durations, request latency, TFTP transfers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lab.testing import Lab
from provision.observability.metrics import Metrics
from tests.support.bootfiles_lab import HTTP, SRV, start_lab


def test_metrics_page_is_prometheus_text_with_help_types_and_histograms(
        lab: Lab, tmp_path: Path) -> None:
    env = start_lab(lab, tmp_path, files={"blob.bin": os.urandom(100_000)})
    out = tmp_path / "out"
    r = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "blob.bin", str(out)],
                    timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert env.curl("-o", str(out), f"{HTTP}/blob.bin").returncode == 0
    for stage in ("dhcp", "kernel", "initramfs"):
        r = env.curl("-f", "-X", "POST", "-H", "Content-Type: application/json",
                     "-d", json.dumps({"stage": stage}), f"{HTTP}/api/v1/events")
        assert r.returncode == 0, r.stderr
    families = {}
    for _ in range(100):  # bounded: the TFTP worker's report reaches the server
        r = env.curl("-D", str(tmp_path / "headers"), f"{HTTP}/metrics")
        assert r.returncode == 0, r.stderr
        families = {f.name: f for f in text_string_to_metric_families(r.stdout)}
        if "dsas_tftp_transfer_seconds" in families:
            break
    headers = (tmp_path / "headers").read_text().lower()
    assert "content-type: text/plain; version=" in headers and "charset=utf-8" in headers
    for f in families.values():
        assert f.documentation, f.name  # HELP for every metric
        assert f.type in ("counter", "gauge", "histogram"), (f.name, f.type)
    text = r.stdout
    for name, kind in (("dsas_tftp_transfers", "counter"), ("dsas_http_requests", "counter"),
                       ("dsas_tftp_active_transfers", "gauge"),
                       ("process_resident_memory_bytes", "gauge"),
                       ("process_cpu_seconds", "counter"),
                       ("dsas_boot_stage_seconds", "histogram"),
                       ("dsas_http_request_seconds", "histogram"),
                       ("dsas_tftp_transfer_seconds", "histogram")):
        assert name in families and families[name].type == kind, (name, sorted(families))
        assert f"# TYPE {name}" in text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("dsas_tftp_transfers_total", (("result", "ok"),))] == 1
    # the names stayed: dsas_tftp_bytes_total is still the series' name
    assert samples[("dsas_tftp_bytes_total", ())] == 100_000
    # dhcp starts a boot; kernel and initramfs each took some time since the stage before
    assert samples[("dsas_boot_stage_seconds_count", (("stage", "kernel"),))] == 1
    assert samples[("dsas_boot_stage_seconds_count", (("stage", "initramfs"),))] == 1
    assert ("dsas_boot_stage_seconds_count", (("stage", "dhcp"),)) not in samples
    assert samples[("dsas_http_request_seconds_count", (("handler", "file"),))] >= 1
    assert samples[("dsas_http_request_seconds_count", (("handler", "post_event"),))] == 3
    # a scraper that asks for OpenMetrics gets it
    r = env.curl("-D", "-", "-o", "/dev/null", "-H",
                 "Accept: application/openmetrics-text; version=1.0.0", f"{HTTP}/metrics")
    assert "content-type: application/openmetrics-text" in r.stdout.lower()


def test_api_keeps_names_and_free_labels() -> None:
    m = Metrics(process=False)
    m.describe("dsas_x_total", "Things")
    m.inc("dsas_x_total")
    m.inc("dsas_x_total", 2, reason='a"b\nc')
    m.set("dsas_level", 3.5, interface="br0")
    m.observe("dsas_wait_seconds", 0.2, kind="a")
    m.observe("dsas_wait_seconds", 0.2, other="b")  # wrong labels: dropped, said once
    assert m.get("dsas_x_total") == 1 and m.get("dsas_x_total", reason='a"b\nc') == 2
    assert m.total("dsas_x_total") == 3
    fams = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert fams["dsas_x"].type == "counter" and fams["dsas_x"].documentation == "Things"
    assert {s.labels.get("reason") for s in fams["dsas_x"].samples} == {None, 'a"b\nc'}
    assert fams["dsas_level"].type == "gauge"
    assert fams["dsas_wait_seconds"].type == "histogram"
    counts = [s for s in fams["dsas_wait_seconds"].samples if s.name.endswith("_count")]
    assert [(s.labels, s.value) for s in counts] == [({"kind": "a"}, 1)]
