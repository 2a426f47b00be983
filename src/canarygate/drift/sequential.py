"""Sequential change detection on each model version's error and latency streams.

Which stream gets which detector follows docs/statistics.md §4:

- **errors** (from feedback labels, in the order they arrive): a classifier's 0/1 wrong
  predictions go to ADWIN (the primary, few false alarms), DDM (an early warning) and EDDM; a
  regressor's absolute errors, standardised, go to ADWIN and Page-Hinkley.
- **latency** (every served request's end-to-end time): ADWIN and Page-Hinkley (upward only,
  no forgetting) on the z-scored log-latency, mu and sigma taken from the version's first
  ``calibration`` requests. Raw milliseconds would need thresholds in milliseconds, which give
  thousands of false alarms (the note's §3.4).

A new version (a deploy) starts new detectors. The request path appends (model, version,
seconds) to a bounded buffer; the drift loop's thread drains it into the detectors. Feedback
feeds its rows from the feedback request, which is not a prediction.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from canarygate.background import Pacer, yield_gil
from canarygate.config import DetectorsConfig
from canarygate.drift.detectors import ADWIN, DDM, EDDM, Detector, PageHinkley
from canarygate.stats.sampling import Stride

MAX_EVENTS = 50  # detections kept per stream, newest last
RATE_EVERY = 256  # latencies between two updates of the sampling stride
BATCHES_KEPT = 600  # a worker's batches waiting for Redis at most (10 minutes at one a second)


@dataclass
class Standardiser:
    """z = (f(x) - mu) / sigma with mu and sigma from the first ``size`` values (Welford)."""

    size: int
    log: bool
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def __call__(self, x: float) -> float | None:
        value = math.log(max(x, 1e-9)) if self.log else x
        if self.n < self.size:
            self.n += 1
            delta = value - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (value - self.mean)
            return None
        sigma = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return (value - self.mean) / max(sigma, 1e-9)

    @property
    def ready(self) -> bool:
        return self.n >= self.size


@dataclass
class Stream:
    """One stream of one version and the detectors watching it."""

    detectors: list[Detector]
    scale: Standardiser | None = None
    keep: int = MAX_EVENTS
    seen: int = 0  # values received (calibration included)
    fed: int = 0  # values the detectors saw
    events: deque[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.events = deque(maxlen=self.keep)

    def add(self, x: float, now: float) -> None:
        self.seen += 1
        value = self.scale(x) if self.scale is not None else x
        if value is None:
            return
        self.fed += 1
        for detector in self.detectors:
            before = detector.warning_detected
            estimate = detector.estimation if isinstance(detector, ADWIN) else None
            if detector.update(value):
                self.events.append({"time": now, "detector": detector.name, "kind": "drift",
                                    "index": self.fed - 1,
                                    "direction": _direction(detector, estimate)})
            elif detector.warning_detected and not before:
                self.events.append({"time": now, "detector": detector.name, "kind": "warning",
                                    "index": self.fed - 1})

    def since(self, start: float) -> list[dict[str, Any]]:
        """The drifts found since ``start`` (warnings left out)."""
        return [e for e in self.events if e["time"] >= start and e["kind"] == "drift"]

    def as_json(self) -> dict[str, Any]:
        return {
            "values": self.seen, "fed": self.fed,
            "calibrating": self.scale is not None and not self.scale.ready,
            "detectors": [d.state() for d in self.detectors],
            "events": list(self.events),
        }


def _direction(detector: Detector, before: float | None) -> str:
    """Which way the stream moved. DDM and EDDM only look for more errors, Page-Hinkley here
    only for an increase; ADWIN finds either: its estimate after the cut (the newer part of
    the window) against the whole window's just before."""
    if isinstance(detector, ADWIN) and before is not None:
        return "up" if detector.estimation > before else "down"
    return "up"


class SequentialMonitor:
    def __init__(self, config: DetectorsConfig, keep: int = MAX_EVENTS) -> None:
        self.config = config
        self.keep = keep
        self.latency_buffer: deque[tuple[str, str, float]] = deque(maxlen=config.buffer)
        self.streams: dict[tuple[str, str, str], Stream] = {}
        # The request path keeps every n-th latency (see tick).
        self.stride = Stride(config.max_latencies_per_second, RATE_EVERY)
        # Shared by several workers (the Redis backend): each worker's inputs leave as
        # batches, and only the acting controller's detectors run, on everyone's batches.
        self.shared = False
        self.leading = False
        self.outbox: deque[dict[str, Any]] = deque()
        self.batches_dropped = 0  # batches not shipped: the outbox was full (Redis away)
        self.inbox: deque[tuple[list[dict[str, Any]], float]] = deque()  # (batches, share)
        self._kept = 0.0  # the latencies' share owed to the detectors (thinning evenly)
        self.published: dict[str, dict[str, Any]] = {}  # the controller's state, per model
        self._errors: deque[tuple[str, str, bool, list[float], float]] = deque(
            maxlen=config.buffer)
        self._restart = False

    def observe_latency(self, model: str, version: str, seconds: float) -> None:
        """The request path's part: counters, and for every n-th request one append (the
        oldest goes when full)."""
        if self.stride.keep():
            self.latency_buffer.append((model, version, seconds))

    def observe_errors(self, model: str, version: str, classifier: bool,
                       errors: list[float], now: float | None = None) -> None:
        """Labelled rows of one version: 0/1 wrong predictions, or absolute errors."""
        at = time.time() if now is None else now
        if self.shared:  # to the controller, in this worker's next batch
            self._errors.append((model, version, classifier, list(errors), at))
            return
        stream = self._stream(model, version, "errors", classifier)
        for e in errors:
            stream.add(e, at)

    def tick(self, now: float | None = None) -> None:
        """Feed the latencies that arrived since the last tick (on the analysis thread).

        A pure-Python ADWIN costs microseconds a value, and this thread's Python work holds
        the GIL the event loop needs, so a busy gateway's latencies are sampled on the request
        path (every n-th request, the stride kept to about ``max_latencies_per_second``;
        docs/statistics.md §4), and the pass pauses for the event
        loop as it goes.
        """
        at = time.time() if now is None else now
        if self.shared:
            self._pack()
            self._feed_merged(at)
            return
        buffer = self.latency_buffer
        pace = Pacer()
        for _ in range(len(buffer)):
            try:
                model, version, seconds_taken = buffer.popleft()
            except IndexError:
                break
            self._stream(model, version, "latency", False).add(seconds_taken, at)
            pace()

    # -- shared by several workers ------------------------------------------------------------

    def share(self) -> None:
        """From now on this worker's inputs leave as batches (``outbox``); its detectors run
        only while it leads, on every worker's batches (``inbox``)."""
        self.shared = True

    def lead(self, leading: bool) -> None:
        """This worker became the acting controller (its detectors start afresh, on the
        batches Redis still holds), or stopped being it (it shows the controller's state, and
        its own detectors go, so that /metrics counts the controller's alone)."""
        if leading != self.leading:
            self._restart = True
        self.leading = leading

    def _pack(self) -> None:
        """What arrived since the last pass, as one batch: the latencies per version (already
        sampled on the request path) and the labelled errors with their times."""
        latencies: dict[tuple[str, str], list[float]] = {}
        for _ in range(len(self.latency_buffer)):
            try:
                model, version, seconds = self.latency_buffer.popleft()
            except IndexError:
                break
            latencies.setdefault((model, version), []).append(seconds)
        errors = []
        while self._errors:
            model, version, classifier, values, at = self._errors.popleft()
            errors.append([model, version, classifier, values, at])
        if not latencies and not errors:
            return
        if len(self.outbox) >= BATCHES_KEPT:
            self.batches_dropped += 1
            self.outbox.popleft()
        self.outbox.append({"l": [[m, v, values] for (m, v), values in latencies.items()],
                            "e": errors})

    def _feed_merged(self, now: float) -> None:
        """Every worker's batches, in the order Redis holds them, into this worker's
        detectors: latencies thinned to ``max_latencies_per_second`` in all (as one process
        would), every labelled error."""
        if self._restart:
            self.streams, self._restart = {}, False
        while self.inbox:
            batches, share = self.inbox.popleft()
            for batch in batches:
                for model, version, values in batch["l"]:
                    stream = self._stream(model, version, "latency", False)
                    for seconds in values:
                        self._kept += share
                        if self._kept >= 1.0 - 1e-9:
                            self._kept -= 1.0
                            stream.add(seconds, now)
                for model, version, classifier, errors, at in batch["e"]:
                    stream = self._stream(model, version, "errors", bool(classifier))
                    for e in errors:
                        stream.add(e, at)
                yield_gil()

    def stream(self, model: str, version: str, kind: str) -> Stream | None:
        return self.streams.get((model, version, kind))

    def state(self, model: str) -> dict[str, Any]:
        """Each version's streams and detectors (shared: the acting controller's, as it
        last published them, on a worker that does not lead)."""
        if self.shared and not self.leading:
            return self.published.get(model, {})
        out: dict[str, Any] = {}
        for (m, version, kind), stream in list(self.streams.items()):
            if m == model:
                out.setdefault(version, {})[kind] = stream.as_json()
        return out

    def _stream(self, model: str, version: str, kind: str, binary: bool) -> Stream:
        key = (model, version, kind)
        found = self.streams.get(key)
        if found is None:
            found = self.streams[key] = self._new(kind, binary)
        return found

    def _new(self, kind: str, binary: bool) -> Stream:
        cfg = self.config
        if kind == "errors" and binary:
            return Stream([ADWIN(delta=cfg.adwin_delta), DDM(), EDDM()], keep=self.keep)
        size = cfg.latency_calibration if kind == "latency" else cfg.error_calibration
        return Stream([ADWIN(delta=cfg.adwin_delta),
                       PageHinkley(min_instances=30, delta=cfg.ph_delta,
                                   threshold=cfg.ph_threshold, alpha=1.0, mode="up")],
                      Standardiser(size, log=kind == "latency"), self.keep)
