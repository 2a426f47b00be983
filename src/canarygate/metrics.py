"""Prometheus metrics, built per app (nothing registered at import time).

Label children are cached on first use, so a request pays a dict lookup, not a label resolution.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from canarygate.drift import DriftMonitor
    from canarygate.drift.sequential import SequentialMonitor
    from canarygate.feedback import FeedbackBook
    from canarygate.recorder import Recorder
    from canarygate.rollout.cluster import Cluster
    from canarygate.runtime.runner import Runner
    from canarygate.stats.live import LiveStats

# From 50 µs up: the client library's defaults start at 5 ms, slower than these models run.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STALE_SECONDS = 5.0  # a worker's gauges older than this are a dead worker's: left out
# Gauges every worker of a group reports alike (or the worst of): their largest, not their sum.
SAME_ON_EVERY_WORKER = frozenset({
    "canarygate_rollout_weight", "canarygate_rollout_phase", "canarygate_drift_level",
    "canarygate_drift_score", "canarygate_detector_warning",
    "canarygate_dataset_writer_lag_seconds", "canarygate_rollout_gate_statistic",
    "canarygate_rollout_gate_threshold", "canarygate_estimated_accuracy"})


class Metrics:
    def __init__(self, group: Path | None = None) -> None:
        self.group = group  # the folder a --workers group's figures meet in (workers.py)
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "canarygate_requests",
            "Prediction requests answered, by model, version, variant, protocol and status code. "
            "model is empty when the request named no served model.",
            ["model", "version", "variant", "protocol", "code"],
            registry=self.registry,
        )
        self._http_errors = Counter(
            "canarygate_http_errors",
            "Error answers outside prediction requests (unknown route, wrong method, "
            "metadata of an unknown model), by status code.",
            ["code"],
            registry=self.registry,
        )
        self._weight = Gauge("canarygate_rollout_weight",
                             "Percent of routed requests the candidate serves.", ["model"],
                             registry=self.registry)
        self._phase = Gauge("canarygate_rollout_phase",
                            "1 for the rollout's current phase, 0 for the others.",
                            ["model", "phase"], registry=self.registry)
        self._verdicts = Counter("canarygate_rollout_verdicts",
                                 "Gate verdicts of the controller's judgements.",
                                 ["model", "gate", "verdict"], registry=self.registry)
        self._decisions = Counter("canarygate_rollout_decisions",
                                  "Decisions on rollouts (advance, hold, pause, rollback, ...).",
                                  ["model", "action"], registry=self.registry)
        self._candidate_failures = Counter(
            "canarygate_candidate_failures",
            "Candidate runs that failed or timed out; the baseline answered instead.",
            ["model", "version", "kind"], registry=self.registry)
        self._shadow = Counter("canarygate_shadow_runs",
                               "Mirrored candidate runs, by outcome (ok, failed, dropped).",
                               ["model", "outcome"], registry=self.registry)
        self._gate_statistic = Gauge(
            "canarygate_rollout_gate_statistic",
            "Each gate's statistic at the controller's last judgement (NaN when it has none).",
            ["model", "gate"], registry=self.registry)
        self._gate_threshold = Gauge(
            "canarygate_rollout_gate_threshold",
            "The threshold each gate's statistic is judged against at the last judgement.",
            ["model", "gate"], registry=self.registry)
        self._notifications = Counter(
            "canarygate_notifications",
            "Webhook deliveries: sent, retried (another attempt), failed (every attempt "
            "failed), dropped (the webhook's queue was full).",
            ["outcome"], registry=self.registry)
        for outcome in ("sent", "retried", "failed", "dropped"):
            self._notifications.labels(outcome)
        self._feedback_rejected = Counter(
            "canarygate_feedback_rejected",
            "Feedback requests refused, by status: 404 (unknown, expired or another model's "
            "request id), 400 (bad labels), 409 (a different label for a labelled id).",
            ["model", "code"], registry=self.registry)
        self._request_children: dict[tuple[str, str, str, str, int], Counter] = {}
        self._loop_lag, self._tick_seconds = _loop_histograms(self.registry)

    def request(self, model: str, version: str, variant: str, protocol: str, code: int) -> None:
        key = (model, version, variant, protocol, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._requests.labels(model, version, variant, protocol, str(code))
            self._request_children[key] = counter
        counter.inc()

    def watch_latency(self, live: LiveStats) -> None:
        """Latency histograms from the per-variant statistics, built at scrape time: the
        request path pays log-bucket inserts it makes anyway, not a Prometheus observe."""
        self.registry.register(_LatencyCollector(live))

    def rollout(self, model: str, phase: str, weight: float, phases: Iterable[str]) -> None:
        """A rollout's weight, and ``phase`` as the one of ``phases`` set to 1."""
        self._weight.labels(model).set(weight)
        for p in phases:
            self._phase.labels(model, p).set(1.0 if p == phase else 0.0)

    def verdict(self, model: str, gate: str, verdict: str) -> None:
        self._verdicts.labels(model, gate, verdict).inc()

    def gate_figures(self, model: str, gate: str, statistic: float | None,
                     threshold: float | None) -> None:
        nan = float("nan")
        self._gate_statistic.labels(model, gate).set(nan if statistic is None else statistic)
        self._gate_threshold.labels(model, gate).set(nan if threshold is None else threshold)

    def feedback_rejected(self, model: str, code: int) -> None:
        self._feedback_rejected.labels(model, str(code)).inc()

    def notification(self, outcome: str) -> None:
        self._notifications.labels(outcome).inc()

    def decision(self, model: str, action: str) -> None:
        self._decisions.labels(model, action).inc()

    def candidate_failure(self, model: str, version: str, kind: str) -> None:
        self._candidate_failures.labels(model, version, kind).inc()

    def shadow(self, model: str, outcome: str) -> None:
        self._shadow.labels(model, outcome).inc()

    def watch_recorder(self, recorder: Recorder) -> None:
        """The dataset's counters, read at scrape time: nothing added to the request path."""
        self.registry.register(_RecorderCollector(recorder))

    def watch_drift(self, monitor: DriftMonitor) -> None:
        self.registry.register(_DriftCollector(monitor))

    def watch_detectors(self, monitor: SequentialMonitor) -> None:
        self.registry.register(_DetectorCollector(monitor))

    def watch_runner(self, runner: Runner) -> None:
        """Micro-batching counters, read at scrape time."""
        self.registry.register(_BatchCollector(runner))

    def watch_feedback(self, book: FeedbackBook) -> None:
        self.registry.register(_FeedbackCollector(book))

    def watch_cluster(self, cluster: Cluster) -> None:
        """The shared store's health and this worker's part in it, read at scrape time."""
        self.registry.register(_ClusterCollector(cluster))

    def loop_lag(self, seconds: float) -> None:
        self._loop_lag.observe(seconds)

    def controller_tick(self, model: str, seconds: float) -> None:
        self._tick_seconds.labels(model).observe(seconds)

    def http_error(self, code: int) -> None:
        self._http_errors.labels(str(code)).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def with_group(self, own: bytes) -> bytes:
        """This worker's figures (``own``, rendered on the event loop, which the collectors'
        figures belong to), with every other worker's of its group added in (file reads: call
        it off the loop)."""
        if self.group is None:
            return own
        mine = f"{os.getpid()}.prom"
        others = []
        now = time.time()
        for path in self.group.glob("*.prom"):
            if path.name == mine:
                continue
            try:
                others.append((path.read_text(), now - path.stat().st_mtime < STALE_SECONDS))
            except OSError:  # a worker replacing its file: its figures are a second old
                continue
        return merge_expositions([(own.decode(), True), *others])

    def publish(self, own: bytes) -> None:
        """Write this worker's figures where its group reads them (off the event loop)."""
        if self.group is None:
            return
        target = self.group / f"{os.getpid()}.prom"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(own)
        tmp.replace(target)


class _RecorderCollector:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Any]:
        r = self.recorder
        records = CounterMetricFamily(
            "canarygate_dataset_records",
            "Inference dataset records: captured (queued), written, dropped (queue full under "
            "the drop policy, or after the writer stopped), failed (could not be written).",
            labels=["outcome"])
        for outcome, value in (("captured", r.captured), ("written", r.written),
                               ("dropped", r.dropped), ("failed", r.failed)):
            records.add_metric([outcome], value)
        yield records
        yield CounterMetricFamily("canarygate_dataset_blocked_requests",
                                  "Requests that waited for room under the block policy.",
                                  value=r.blocked)
        yield GaugeMetricFamily("canarygate_dataset_queue_depth",
                                "Records waiting for the writer.", value=len(r.queue))
        yield CounterMetricFamily(
            "canarygate_dataset_writer_errors",
            "Dataset writer I/O errors other than a record's own: closing a segment, Parquet, "
            "retention.", value=r.errors)
        yield GaugeMetricFamily("canarygate_dataset_writer_lag_seconds",
                                "Age of the oldest record waiting for the writer.",
                                value=r.lag_seconds(time.time()))


LATENCY_HELP = {
    "total": ("canarygate_request_duration_seconds",
              "Time from receiving a prediction request to having its answer, successful "
              "requests (buckets within 1 % of their bounds)."),
    "queue": ("canarygate_queue_duration_seconds",
              "Time a successful request waited for its model run to start."),
    "inference": ("canarygate_inference_duration_seconds",
                  "The model run that answered a successful request (the whole batch's)."),
}


class _LatencyCollector:
    def __init__(self, live: LiveStats) -> None:
        self.live = live

    def collect(self) -> Iterator[Any]:
        families = {kind: HistogramMetricFamily(name, text,
                                                labels=["model", "version", "variant"])
                    for kind, (name, text) in LATENCY_HELP.items()}
        for (model, version, variant), stats in list(self.live.variants.items()):
            totals = stats.totals()
            for kind, family in families.items():
                hist = getattr(totals, kind)
                counts = hist.cumulative(LATENCY_BUCKETS)
                buckets = [(repr(b), c) for b, c in zip(LATENCY_BUCKETS, counts, strict=True)]
                family.add_metric([model, version, variant], [*buckets, ("+Inf", hist.count)],
                                  hist.sum)
        yield from families.values()


def _loop_histograms(registry: CollectorRegistry) -> tuple[Histogram, Histogram]:
    """What holds the event loop: its lag, and the controller's ticks that run on it."""
    lag = Histogram(
        "canarygate_event_loop_lag_seconds",
        "How late the event loop woke a 10 ms timer: time it spent on other work (a long "
        "callback, the garbage collector, a background thread holding the GIL). Requests "
        "arriving meanwhile queue for at least this long.", registry=registry,
        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
    tick = Histogram(
        "canarygate_controller_tick_seconds",
        "Time one controller tick (the judgement of one model's rollout) held the event "
        "loop.", ["model"], registry=registry,
        buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0))
    return lag, tick


class _BatchCollector:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Any]:
        labels = ["model", "version"]
        batches = CounterMetricFamily("canarygate_batches",
                                      "onnxruntime runs made by micro-batching.", labels=labels)
        rows = CounterMetricFamily("canarygate_batch_rows",
                                   "Rows those runs took (rows / batches is the mean batch).",
                                   labels=labels)
        on_loop = CounterMetricFamily(
            "canarygate_batches_on_loop",
            "Of those runs, the ones made on the event loop itself (expected to take under the "
            "model's batching.inline_max_us); the others went to an inference thread.",
            labels=labels)
        for version, batcher in list(self.runner.batchers.items()):
            batches.add_metric([version.model, version.version], batcher.batches)
            rows.add_metric([version.model, version.version], batcher.rows)
            on_loop.add_metric([version.model, version.version], batcher.inline_batches)
        yield batches
        yield rows
        yield on_loop


class _FeedbackCollector:
    def __init__(self, book: FeedbackBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Any]:
        labelled = CounterMetricFamily(
            "canarygate_feedback_labels", "Prediction rows that received a label.",
            labels=["model", "version"])
        correct = CounterMetricFamily(
            "canarygate_feedback_correct", "Labelled classifier rows predicted right.",
            labels=["model", "version"])
        abs_error = CounterMetricFamily(
            "canarygate_feedback_absolute_error",
            "Labelled regressor rows: sum of |prediction - label|.", labels=["model", "version"])
        for (model, version), score in list(self.book.scores.items()):
            labelled.add_metric([model, version], score.labelled)
            correct.add_metric([model, version], score.correct)
            abs_error.add_metric([model, version], score.abs_error)
        yield labelled
        yield correct
        yield abs_error


LEVELS = {"window_too_small": -1.0, "ok": 0.0, "warn": 1.0, "alert": 2.0}
DRIFT_SCORES = ("psi", "js_distance", "ks", "wasserstein", "hellinger", "l_infinity")


class _DriftCollector:
    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        labels = ["model", "version", "variant", "column"]
        level = GaugeMetricFamily(
            "canarygate_drift_level",
            "Drift level of a column: -1 window too small, 0 ok, 1 warn, 2 alert.", labels=labels)
        score = GaugeMetricFamily("canarygate_drift_score",
                                  "Drift scores of a column against the version's profile.",
                                  labels=[*labels, "metric"])
        rows = GaugeMetricFamily("canarygate_drift_window_rows", "Rows in the drift window.",
                                 labels=["model", "version", "variant"])
        dropped = CounterMetricFamily(
            "canarygate_drift_dropped_rows",
            "Rows the drift buffer dropped unbinned (drift.buffer reached).", labels=["model"])
        for name, n in list(self.monitor.dropped_by_model.items()):
            dropped.add_metric([name], n)
        estimated = GaugeMetricFamily(
            "canarygate_estimated_accuracy",
            "A calibrated classifier's accuracy estimated from its own scores over the drift "
            "window, before any label (bound: estimate, low, high of its 95 % interval).",
            labels=["model", "version", "variant", "bound"])
        for model, report in list(self.monitor.reports.items()):
            for v in report.variants:
                rows.add_metric([model, v.version, v.variant], v.window_rows)
                found = v.estimated_accuracy
                if found is not None and found.accuracy is not None:
                    for bound, value in (("estimate", found.accuracy), ("low", found.low),
                                         ("high", found.high)):
                        estimated.add_metric([model, v.version, v.variant, bound], value or 0.0)
                for col in v.features + v.outputs:
                    key = [model, v.version, v.variant, col.name]
                    level.add_metric(key, LEVELS.get(col.level, -1.0))
                    for name in DRIFT_SCORES:
                        if name in col.scores:
                            score.add_metric([*key, name], col.scores[name])
        yield level
        yield score
        yield rows
        yield dropped
        yield estimated


class _DetectorCollector:
    def __init__(self, monitor: SequentialMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        labels = ["model", "version", "stream", "detector"]
        drifts = CounterMetricFamily(
            "canarygate_detector_drifts",
            "Changes found by the sequential detectors on a version's error (from feedback) or "
            "latency stream.", labels=labels)
        warning = GaugeMetricFamily("canarygate_detector_warning",
                                    "1 while DDM or EDDM is in its warning zone.", labels=labels)
        seen = CounterMetricFamily("canarygate_detector_values",
                                   "Values the detectors of a stream saw.",
                                   labels=["model", "version", "stream"])
        for (model, version, kind), stream in list(self.monitor.streams.items()):
            seen.add_metric([model, version, kind], stream.fed)
            for d in stream.detectors:
                drifts.add_metric([model, version, kind, d.name], d.n_detections)
                if d.name in ("ddm", "eddm"):
                    warning.add_metric([model, version, kind, d.name],
                                       1.0 if d.warning_detected else 0.0)
        yield drifts
        yield warning
        yield seen


class _ClusterCollector:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[Any]:
        c = self.cluster
        yield GaugeMetricFamily("canarygate_store_up",
                                "1 while the shared state store (Redis) answers, else 0.",
                                value=1.0 if c.available else 0.0)
        yield GaugeMetricFamily("canarygate_controller_lease",
                                "1 while this worker holds the controller's lease.",
                                value=1.0 if c.acting() else 0.0)
        yield CounterMetricFamily("canarygate_store_outages",
                                  "Times the shared state store went away.", value=c.outages)
        yield CounterMetricFamily("canarygate_store_errors",
                                  "Shared state store commands that failed.", value=c.errors)
        writes = CounterMetricFamily(
            "canarygate_store_writes_lost",
            "Rollout writes not stored: refused (a lost lease, a newer state) or dropped "
            "(the store away through every retry).", labels=["outcome"])
        writes.add_metric(["refused"], c.refused)
        writes.add_metric(["dropped"], c.dropped)
        yield writes
        shipped = CounterMetricFamily(
            "canarygate_feedback_shared_predictions",
            "Predictions put in the shared feedback index (shipped), or not: the outbox was "
            "full while the store was away (dropped).", labels=["outcome"])
        shipped.add_metric(["shipped"], c.shipped)
        shipped.add_metric(["dropped"], c.outbox_dropped)
        yield shipped
        if c.telemetry is not None and c.telemetry.detectors is not None:
            yield CounterMetricFamily(
                "canarygate_detector_batches_dropped",
                "Batches of detector inputs this worker could not ship: its outbox was full "
                "while the store was away.", value=c.telemetry.detectors.batches_dropped)
        yield GaugeMetricFamily(
            "canarygate_feedback_shared_reach_seconds",
            "How long the shared index keeps a prediction: the feedback TTL, or less when the "
            "request rate would pass feedback.shared_budget_bytes.", value=c.reach_seconds)


def merge_expositions(texts: list[tuple[str, bool]]) -> bytes:
    """Several workers' /metrics as one: counters and histograms added up, gauges added up
    too (queue depths, rows) except those every worker reports alike (their largest) and the
    store's health (the worst). ``texts`` pairs each exposition with whether it is fresh: a
    dead worker's counts still count (a counter never goes down), its gauges no longer."""
    families: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text, fresh in texts:
        for family in text_string_to_metric_families(text):
            if family.type == "gauge" and not fresh:
                continue
            families.setdefault(family.name, (family.type, family.documentation))
            merged = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                merged[key] = _combine(family.name, family.type, sample.name, merged.get(key),
                                       sample.value)
    lines = []
    for name, (kind, doc) in families.items():
        # The client library names a counter's family with its samples' _total, as here.
        header = f"{name}_total" if kind == "counter" else name
        lines.append(f"# HELP {header} {_escape(doc, help_text=True)}")
        lines.append(f"# TYPE {header} {kind}")
        for (sample_name, labels), value in values[name].items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            number = floatToGoString(value)  # type: ignore[no-untyped-call]
            lines.append(f"{sample_name}{{{label_text}}} {number}" if labels
                         else f"{sample_name} {number}")
    return ("\n".join(lines) + "\n").encode()


def _combine(family: str, kind: str, sample: str, old: float | None, new: float) -> float:
    if old is None:
        return new
    if sample.endswith("_created"):
        return min(old, new)
    if family == "canarygate_store_up":
        return min(old, new)
    if kind == "gauge" and family in SAME_ON_EVERY_WORKER:
        return max(old, new)
    return old + new


def _escape(text: str, help_text: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text if help_text else text.replace('"', '\\"')
