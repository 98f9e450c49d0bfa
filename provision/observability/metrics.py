"""Counters, gauges and histograms for every service, served at /metrics by prometheus_client.

The services keep one small API (``describe``, ``inc``, ``set``, ``observe``, ``get``,
``total``, ``render``) and free-form labels; this module turns it into
prometheus_client's registry, so the page has HELP and TYPE for every metric, the
standard content types (text 0.0.4/1.0.0 or OpenMetrics, as the scraper asks), the
process metrics (``process_*``: CPU, memory, descriptors) and real histograms.

A name ending in ``_total`` is a counter; any other name given to ``inc``/``set`` is a
gauge; ``observe`` makes a histogram (buckets fixed at its first use).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]

# Seconds between two boot stages of a host (DHCP to kernel, ..., image to ready).
STAGE_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
# Seconds to answer one request (HTTP handler, DHCP reply): fast paths are sub-ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                   5, 10)


def _labels(labels: dict[str, object]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class _Values(Collector):
    """Our counters and gauges, handed to prometheus_client at each scrape."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        m = self.owner
        with m._lock:
            snapshot = {name: dict(series) for name, series in m._values.items()}
            helps = dict(m._help)
        for name in sorted(snapshot):
            counter = name.endswith("_total")
            family = name[: -len("_total")] if counter else name
            doc = helps.get(name) or helps.get(family) or name.replace("_", " ")
            metric = Metric(family, doc, "counter" if counter else "gauge")
            for labels, value in sorted(snapshot[name].items()):
                metric.add_sample(name, dict(labels), value)
            yield metric


class Metrics:
    """A thread-safe registry of one server (each has its own, so tests can run several)."""

    def __init__(self, process: bool = True) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._histograms: dict[str, tuple[Histogram, tuple[str, ...]]] = {}
        self._bad: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Values(self))
        if process:
            ProcessCollector(registry=self.registry)

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def inc(self, name: str, value: float = 1, **labels: object) -> None:
        key = _labels(labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + value

    def set(self, name: str, value: float, **labels: object) -> None:
        with self._lock:
            self._values[name][_labels(labels)] = value

    def observe(self, name: str, value: float, buckets: Sequence[float] = LATENCY_BUCKETS,
                **labels: object) -> None:
        """One observation into histogram ``name``; its label names are fixed at first use."""
        names = tuple(sorted(labels))
        with self._lock:
            entry = self._histograms.get(name)
            if entry is None:
                doc = self._help.get(name) or name.replace("_", " ")
                entry = (Histogram(name, doc, labelnames=names, buckets=tuple(buckets),
                                   registry=self.registry), names)
                self._histograms[name] = entry
        hist, known = entry
        if names != known:  # a bug in a caller: say so once, never break the service
            if name not in self._bad:
                self._bad.add(name)
                log.error("metrics: %s observed with labels %s, not %s", name, names, known)
            return
        (hist.labels(**{k: str(v) for k, v in labels.items()}) if names else hist).observe(value)

    def get(self, name: str, **labels: object) -> float:
        with self._lock:
            return self._values.get(name, {}).get(_labels(labels), 0)

    def total(self, name: str) -> float:
        with self._lock:
            return sum(self._values.get(name, {}).values())

    def render(self) -> str:
        """The text exposition format (what /metrics serves to a plain scraper)."""
        return generate_latest(self.registry).decode()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The page and its content type, in the format the scraper's Accept asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
