"""What the store says about the pipeline, for the dashboard and for Prometheus (``/metrics``).

:class:`StoreStats` reads the committed checkpoint and, when its sequence number has moved on,
the per-task prequential metrics, the profile count and the segment history; it also samples the
event count against the wall clock, so the live throughput is measured where it is served (the
core itself never reads a clock). :func:`mount_metrics` exposes the same figures, plus request
counts and latencies per route, in the Prometheus text format.

>>> from liveprofile.store import open_store
>>> store = open_store("memory://")
>>> store.setup()
>>> stats = StoreStats(lambda: store)
>>> snap = stats.snapshot()
>>> snap.events, snap.profiles, snap.segments
(0, 0, None)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as render_prometheus
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from liveprofile.learn.metrics import Prequential
from liveprofile.learn.registry import tuning_of_checkpoint
from liveprofile.learn.regression import RegressionMetrics, metrics_from_bytes
from liveprofile.store import Store
from liveprofile.store.layout import (
    PROFILES,
    SEGMENT_HISTORY,
    Checkpoint,
    metrics_meta,
    model_meta,
    read_checkpoint,
    stored_config,
)
from liveprofile.store.scoped import registered_scopes

#: the blob the segment evaluator commits: msgpack of [[watermark, {segment: members}], ...]
#: throughput is measured over the samples of this many recent seconds
THROUGHPUT_SPAN_S = 10.0
#: request latency buckets (seconds): fine below 10 ms, where a profile read should be
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)

SegmentHistory = list[tuple[float, dict[str, int]]]


@dataclass(frozen=True)
class TaskMetrics:
    """One task's prequential metrics: overall and per event-time window (oldest first)."""

    summary: dict[str, Any]
    windows: list[dict[str, Any]]


@dataclass(frozen=True)
class Snapshot:
    """The store as of one committed checkpoint."""

    seq: int
    events: int
    duplicates: int
    dead_letters: int
    watermark: float | None
    profiles: int
    tasks: dict[str, TaskMetrics]
    window_s: float
    segments: SegmentHistory | None
    segments_error: str | None = None
    #: the partition scopes whose figures were merged (empty: one pipeline's store)
    partitions: tuple[str, ...] = ()

    @property
    def segment_sizes(self) -> dict[str, int]:
        """The latest size of every segment (empty without a segment history)."""
        return dict(self.segments[-1][1]) if self.segments else {}


@dataclass
class Throughput:
    """Events per second from successive (wall time, events committed) samples."""

    span: float = THROUGHPUT_SPAN_S
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=1000))
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=300))

    def sample(self, now: float, events: int) -> dict[str, float | int | None]:
        """Record a sample; the rate over the last ``span`` seconds (or since the previous
        sample if that is older), with the events and seconds it was measured over.

        >>> t = Throughput(span=10.0)
        >>> t.sample(100.0, 0)["events_per_s"] is None
        True
        >>> t.sample(102.0, 500)
        {'events_per_s': 250.0, 'events': 500, 'seconds': 2.0}
        >>> t.sample(120.0, 500)["events_per_s"]  # nothing new in the last 18 s
        0.0
        """
        while len(self.samples) > 1 and now - self.samples[1][0] >= self.span:
            self.samples.popleft()  # keep one sample at or beyond the span as the baseline
        base = self.samples[0] if self.samples else None
        self.samples.append((now, events))
        if base is None or now <= base[0]:
            return {"events_per_s": None, "events": 0, "seconds": 0.0}
        delta, seconds = events - base[1], now - base[0]
        rate = delta / seconds
        self.history.append((now, rate))
        return {"events_per_s": rate, "events": delta, "seconds": seconds}


class StoreStats:
    """Store-derived figures, re-read only when the committed checkpoint changes."""

    def __init__(
        self, store_of: Callable[[], Store], clock: Callable[[], float] = time.time
    ) -> None:
        self._store_of = store_of
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self.throughput = Throughput()

    def snapshot(self) -> Snapshot:
        store = self._store_of()
        ckpt = read_checkpoint(store)
        if self._snapshot is None or self._snapshot.seq != ckpt.seq or ckpt.seq == 0:
            self._snapshot = _read_snapshot(store, ckpt)
        return self._snapshot

    def sample(self) -> tuple[Snapshot, dict[str, float | int | None]]:
        """The snapshot and the throughput measured up to now."""
        snap = self.snapshot()
        return snap, self.throughput.sample(self._clock(), snap.events)


def _read_snapshot(store: Store, ckpt: Checkpoint) -> Snapshot:
    tasks: dict[str, TaskMetrics] = {}
    config = stored_config(store)
    for task in config.tasks:
        blob = store.get_meta(metrics_meta(task.name))
        metrics = (
            (RegressionMetrics() if task.regression else Prequential())
            if blob is None
            else metrics_from_bytes(blob)
        )
        summary = metrics.summary()
        if task.learner.kind == "tuned":  # its champion and decisions, from the saved model
            summary.update(tuning_of_checkpoint(store.get_meta(model_meta(task.name))))
        tasks[task.name] = TaskMetrics(summary, metrics.windows())
    segments, error = None, None
    blob = store.get_meta(SEGMENT_HISTORY)
    if blob is not None:
        try:
            segments = msgspec.msgpack.decode(blob, type=SegmentHistory)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = f"cannot read {SEGMENT_HISTORY}: {exc}"
    return Snapshot(
        seq=ckpt.seq,
        events=ckpt.events,
        duplicates=ckpt.duplicates,
        dead_letters=ckpt.dead_letters,
        watermark=ckpt.watermark if math.isfinite(ckpt.watermark) else None,
        profiles=store.count(PROFILES),
        tasks=tasks,
        window_s=config.run.metrics_window_s,
        segments=segments,
        segments_error=error,
        partitions=tuple(sorted(registered_scopes(store))),
    )


class _StoreCollector(Collector):
    """Gauges read from the store at scrape time (the pipeline's counters are its own)."""

    def __init__(self, stats: StoreStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        snap = self.stats.snapshot()
        scalars = [
            ("events", "Events applied to the store (after de-duplication)", snap.events),
            ("duplicates", "Events skipped as already applied (same event_id)", snap.duplicates),
            ("dead_letters", "Records rejected to the dead-letter sink", snap.dead_letters),
            ("profiles", "User profiles in the store", snap.profiles),
            ("checkpoint_seq", "Sequence number of the last committed batch", snap.seq),
            (
                "partitions",
                "Partitions whose state the store keeps (0: one pipeline)",
                len(snap.partitions),
            ),
        ]
        for name, doc, value in scalars:
            yield GaugeMetricFamily(f"liveprofile_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "liveprofile_watermark_seconds",
            "Latest event time in the store (epoch seconds; NaN before the first event)",
            value=math.nan if snap.watermark is None else snap.watermark,
        )
        per_task = {
            "auc": ("Prequential AUC of the task's model (NaN until both labels seen)", "auc"),
            "logloss": ("Prequential mean log loss of the task's model", "logloss"),
            "examples": ("Prequential examples scored (predict, then learn)", "n"),
            "mae": ("Prequential mean absolute error of a regression task (NaN otherwise)", "mae"),
            "rmse": ("Prequential root mean squared error of a regression task", "rmse"),
        }
        for name, (doc, key) in per_task.items():
            family = GaugeMetricFamily(f"liveprofile_task_{name}", doc, labels=["task"])
            for task, metrics in snap.tasks.items():
                found = metrics.summary.get(key)
                family.add_metric([task], math.nan if found is None else float(found))
            yield family
        detections = GaugeMetricFamily(
            "liveprofile_task_drift_detections",
            "Drifts the detector found on the task's prequential loss (Page-Hinkley)",
            labels=["task"],
        )
        last = GaugeMetricFamily(
            "liveprofile_task_last_drift_seconds",
            "Event time of the task's latest drift detection (epoch seconds; NaN if none)",
            labels=["task"],
        )
        for task, metrics in snap.tasks.items():
            found = metrics.summary["drift"]
            detections.add_metric([task], found["detections"])
            latest = found["events"][-1]["ts"] if found["events"] else math.nan
            last.add_metric([task], latest)
        yield detections
        yield last
        sizes = GaugeMetricFamily(
            "liveprofile_segment_members", "Members of each segment", labels=["segment"]
        )
        for segment, members in snap.segment_sizes.items():
            sizes.add_metric([segment], members)
        yield sizes


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class _RequestMetrics:
    """Pure ASGI middleware: request count and latency per route template and status."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def record_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.requests.labels(path, method, str(status)).inc()
            self.latency.labels(path, method).observe(time.perf_counter() - start)


def mount_metrics(app: FastAPI, stats: StoreStats, dependencies: Sequence[Depends]) -> None:
    """``GET /metrics`` (Prometheus text format) and request metrics for every route of ``app``.

    ``dependencies`` guard ``/metrics`` (the read token, unless the server opens it).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(stats))
    requests = Counter(
        "liveprofile_http_requests",
        "HTTP requests by route template, method and status",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "liveprofile_http_request_duration_seconds",
        "HTTP request latency by route template (first byte in to last byte out)",
        ["route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    app.add_middleware(_RequestMetrics, requests=requests, latency=latency)

    @app.get("/metrics", dependencies=list(dependencies), include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus exposition of the store's figures and the HTTP request metrics."""
        return Response(render_prometheus(registry), media_type=CONTENT_TYPE_LATEST)
