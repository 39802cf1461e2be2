"""Prometheus metrics of a station, on a registry of its own (not the global one).

Counters and histograms are fed by the station's ``metrics`` channel (committed
inspections, :mod:`kanjian.station.channels`);
gauges that mirror live state (model, provider, queues, camera) are read at
scrape time by a collector, so they are never stale.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from kanjian.inference.quality_gate import QUALITY_CODES, quality_from_text
from kanjian.inference.types import Inspection, Verdict
from kanjian.station.pipeline import Station
from kanjian.station.sync.service import SyncService

# seconds; ONNX inference on a CPU sits around 0.01-0.1, preprocessing around 0.001
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _LiveCollector(Collector):
    def __init__(self, station: Station, loop_alive: Callable[[], bool]) -> None:
        self.station = station
        self.loop_alive = loop_alive

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        st = self.station
        model = st.inspector.model
        info = InfoMetricFamily("kanjian_model", "the model judging now")
        info.add_metric(
            [],
            {
                "name": model.info.name,
                "version": model.info.version,
                "sha256": model.info.sha256,
                "task": model.info.task,
                "provider": model.session_info.provider,
            },
        )
        yield info
        si = model.session_info
        fb = GaugeMetricFamily(
            "kanjian_provider_fallback",
            "1 when ONNX Runtime runs on another provider than the first one asked for "
            "(model.allow_fallback)",
            labels=["provider", "requested"],
        )
        fb.add_metric([si.provider, si.requested[0] if si.requested else ""], float(si.fell_back))
        yield fb
        store = st.store.stats()
        q = GaugeMetricFamily("kanjian_queue_depth", "items waiting", labels=["queue"])
        pump = st.pump.stats()
        q.add_metric(["store"], store.queued)
        q.add_metric(["triggers"], st.triggers.depth())
        q.add_metric(["camera"], pump.queued)
        yield q
        err = CounterMetricFamily("kanjian_errors", "errors by kind", labels=["kind"])
        err.add_metric(["store_write"], store.errors)
        err.add_metric(["camera_failure"], pump.source.failures)
        err.add_metric(["trigger_refused"], st.triggers.counters.refused)
        yield err
        judged = CounterMetricFamily("kanjian_store_judged", "inspections handed to the store")
        judged.add_metric([], store.judged)
        yield judged
        done = CounterMetricFamily("kanjian_store_committed", "inspection rows committed")
        done.add_metric([], store.written)
        yield done
        restarts = CounterMetricFamily(
            "kanjian_store_writer_restarts", "store writer processes that died and were replaced"
        )
        restarts.add_metric([], store.writer_restarts)
        yield restarts
        lost = CounterMetricFamily("kanjian_store_images_not_saved", "images dropped (disk full)")
        lost.add_metric([], store.images_not_saved)
        yield lost
        stall = GaugeMetricFamily(
            "kanjian_store_stalled", "1 while the store's commits fail and are retried (disk full)"
        )
        stall.add_metric([], 1.0 if store.stalled else 0.0)
        yield stall
        if store.last_error is not None:  # kept after the stall: the last cause seen
            why = InfoMetricFamily("kanjian_store_last_error", "the store's last write error")
            why.add_metric([], {"error": store.last_error[:200]})
            yield why
        free = GaugeMetricFamily("kanjian_disk_free_bytes", "free space of the data folder, bytes")
        free.add_metric([], float(shutil.disk_usage(st.store.data_dir).free))
        yield free
        rec = CounterMetricFamily("kanjian_camera_reconnects", "camera reconnections")
        rec.add_metric([], pump.source.reconnects)
        yield rec
        up = GaugeMetricFamily("kanjian_loop_running", "1 while the inspection loop runs")
        up.add_metric([], 1.0 if self.loop_alive() else 0.0)
        yield up
        sync = st.channels.get(SyncService)
        if sync is not None:  # the platform sync's own gauges and counters
            for name, value in sync.status().metrics().items():
                doc = "platform sync (see kanjian.station.sync.status)"
                fam: GaugeMetricFamily | CounterMetricFamily
                if name.endswith("_total"):
                    fam = CounterMetricFamily(name.removesuffix("_total"), doc)
                else:
                    fam = GaugeMetricFamily(name, doc)
                fam.add_metric([], value)
                yield fam
        if st.retention is not None:  # store.retention's counters (station/retention.py)
            for name, value in st.retention.status().metrics().items():
                doc = "store retention (see kanjian.station.retention_status)"
                if name.endswith("_total"):
                    fam = CounterMetricFamily(name.removesuffix("_total"), doc)
                else:
                    fam = GaugeMetricFamily(name, doc)
                fam.add_metric([], value)
                yield fam
        cam = GaugeMetricFamily("kanjian_camera_connected", "1 while the frame source is connected")
        cam.add_metric([], 1.0 if pump.source.state == "connected" else 0.0)
        yield cam


class StationMetrics:
    """The metrics of one station: its ``metrics`` channel."""

    name = "metrics"

    def __init__(self, station: Station, loop_alive: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.inspections = Counter(
            "kanjian_inspections",
            "committed inspections by verdict",
            ["verdict"],
            registry=self.registry,
        )
        self.detections = Counter(
            "kanjian_detections",
            "committed detections by class",
            ["class_name"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kanjian_stage_latency_seconds",
            "per-stage latency of an inspection",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # issue 15: the image quality gate's rejections and its latest numbers
        self.quality_rejected = Counter(
            "kanjian_quality_rejected",
            "frames the image quality gate gave an ERROR verdict, by reason "
            "(dark, bright, clipped, reference, blurred)",
            ["reason"],
            registry=self.registry,
        )
        for code in QUALITY_CODES:  # every reason listed from the start, at 0
            self.quality_rejected.labels(code.removeprefix("quality_"))
        self.quality = Gauge(
            "kanjian_quality",
            "the image quality numbers of the newest committed frame the gate measured "
            "(focus, mean, dark, bright, reference_diff)",
            ["measure"],
            registry=self.registry,
        )
        self.http_errors = Counter(
            "kanjian_http_errors",
            "HTTP responses with a 5xx status",
            ["path"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(station, loop_alive))

    def start(self) -> None:
        """Nothing to start: the collector reads live state at scrape time."""

    def close(self) -> None:
        """Nothing to release."""

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        for insp in batch:
            self.inspections.labels(insp.verdict.value).inc()
            names = insp.class_names
            for cid in insp.detections.class_id:
                c = int(cid)
                self.detections.labels(names[c] if 0 <= c < len(names) else str(c)).inc()
            for stage, ms in insp.timings_ms.items():
                self.latency.labels(stage).observe(ms / 1e3)
            if insp.quality is not None:
                for measure, value in insp.quality.values().items():
                    if measure != "rows":
                        self.quality.labels(measure).set(value)
                gate = quality_from_text(insp.reason) if insp.verdict is Verdict.ERROR else None
                if gate is not None:
                    self.quality_rejected.labels(gate[0].removeprefix("quality_")).inc()
