"""Drift, detector inputs and last-minute figures of every worker, through Redis, so that a
shared gateway judges and shows everyone's traffic (the step's counters go with the cluster's
sync itself: rollout/cluster.py).

All of it runs in the cluster's sync, on its thread, about once a second; the request path
only appends, as with one process.

- **Drift** (drift/shared.py): each worker ships the cumulative snapshot of its open drift
  interval (and the last one of the interval just over) to ``p:drift:<interval>``, a hash
  worker -> snapshot; once an interval is over and every worker had time to ship its last
  snapshot of it, each worker reads the hash whole and its drift monitor adds the snapshots
  up into one sub-window. Every replica evaluates the same merged window.
- **Detectors** (drift/sequential.py): each worker appends a batch of what its detectors
  would have been fed (sampled latencies, labelled errors) to the stream ``p:detect``; only
  the acting controller reads the stream and runs the detectors, latencies thinned to
  ``detectors.max_latencies_per_second`` in all, as one process would. It publishes their
  state to ``p:detectors`` (model -> state) every sync; the others show that.
- **Last minute** (stats/live.py): each worker ships its last-minute slots per variant to
  ``p:live:<model>`` (worker -> slots, on the wall clock); ``/admin/stats`` on any worker
  reads the others' when asked and adds them to its own.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from canarygate.drift import DriftMonitor
from canarygate.drift.sequential import BATCHES_KEPT, SequentialMonitor
from canarygate.drift.shared import interval_of
from canarygate.rollout.redis_store import RedisStore
from canarygate.stats.live import LiveStats

DRIFT_GRACE = 2.5  # seconds past an interval (besides two syncs) before it is read whole
STREAM_KEEP = 2000  # detector batches the stream keeps (a new controller starts from them)
READ_COUNT = 1000  # detector batches read at most in one command
LIVE_SECONDS = 120  # a worker's last-minute figures outlive it this long
LIVE_EVERY = 1.0  # seconds between two shipments of a worker's last-minute figures


class Telemetry:
    def __init__(self, store: RedisStore, worker: str, sync_seconds: float, models: list[str],
                 live: LiveStats, drift: DriftMonitor | None = None,
                 detectors: SequentialMonitor | None = None) -> None:
        self.store = store
        self.worker = worker
        self.sync_seconds = sync_seconds
        self.models = models
        self.live = live
        self.drift = drift
        self.detectors = detectors
        self._live: dict[str, str] = {}  # model -> this worker's last minute, not shipped
        self._captured = 0.0
        self._next: int | None = None  # the next drift interval to read
        self._cursor: str | None = None  # the last detector batch read, while leading
        self._seq = 0
        self._last_seq: dict[str, int] = {}  # per worker, the last detector batch fed
        if drift is not None:
            drift.share()
        if detectors is not None:
            detectors.share()

    def capture(self, now: float, wall: float) -> None:
        """On the event loop (which owns the last-minute figures): this worker's, as JSON, at
        most once a second whatever the sync's pace."""
        if wall - self._captured >= LIVE_EVERY:
            self._live = {m: self.live.snapshot(m, now, wall) for m in self.models}
            self._captured = wall

    def sync(self, acting: bool, wall: float | None = None) -> None:
        """One exchange (on the sync thread; redis.RedisError or OSError when Redis is away,
        with what was not shipped kept for the next one)."""
        at = time.time() if wall is None else wall
        live, self._live = self._live, {}
        self.store.put_fields([(self.store.key("live", m), {self.worker: text})
                               for m, text in live.items()], LIVE_SECONDS)
        if self.drift is not None:
            self._ship_drift()
            self._read_drift(at)
        if self.detectors is not None:
            self._ship_batches(self.detectors)
            if acting:
                self._lead(self.detectors)
            else:
                self._follow(self.detectors)

    def others_live(self, model: str, wall: float) -> list[dict[str, Any]] | None:
        """The other workers' last minute of ``model`` (blocking: call it off the loop);
        None when Redis cannot be reached."""
        try:
            found = self.store.get_fields([self.store.key("live", model)])[0]
        except (redis.RedisError, OSError):
            return None
        out = []
        for worker, text in found.items():
            snapshot = json.loads(text)
            if worker != self.worker and snapshot["at"] > wall - LIVE_SECONDS:
                out.append(snapshot)
        return out

    # -- drift --------------------------------------------------------------------------------

    def _ship_drift(self) -> None:
        assert self.drift is not None
        taken = self.drift.take_snapshots()
        seconds = self.drift.config.interval_seconds * (self.drift.config.window_intervals + 2)
        try:
            self.store.put_fields([(self.store.key("drift", str(k)), {self.worker: text})
                                   for k, text in taken.items()], seconds + 60)
        except Exception:
            self.drift.keep_unshipped(taken)
            raise

    def _read_drift(self, wall: float) -> None:
        """Every interval that is over, with time for every worker's last snapshot of it."""
        assert self.drift is not None
        cfg = self.drift.config
        ready = interval_of(wall - DRIFT_GRACE - 2 * self.sync_seconds, cfg.interval_seconds)
        first = ready - cfg.window_intervals  # a new worker fills its window from Redis
        start = first if self._next is None else max(self._next, first)
        wanted = list(range(start, ready))
        if not wanted:
            return
        found = self.store.get_fields([self.store.key("drift", str(k)) for k in wanted])
        for k, fields in zip(wanted, found, strict=True):
            self.drift.arrived.append((k, list(fields.values())))
        self._next = ready

    # -- detectors ----------------------------------------------------------------------------

    def _ship_batches(self, monitor: SequentialMonitor) -> None:
        taken = []
        while monitor.outbox:
            taken.append(monitor.outbox.popleft())
        texts = []
        for batch in taken:
            self._seq += 1
            texts.append(json.dumps({"w": self.worker, "n": self._seq, **batch}))
        try:
            self.store.add_batches(self.store.key("detect"), texts, STREAM_KEEP)
        except Exception:
            for batch in reversed(taken):
                if len(monitor.outbox) < BATCHES_KEPT:
                    monitor.outbox.appendleft(batch)
                else:
                    monitor.batches_dropped += 1
            raise

    def _lead(self, monitor: SequentialMonitor) -> None:
        """Read every batch since the last (all the stream holds on taking the lease),
        hand them to the detectors, publish their state."""
        if self._cursor is None:
            monitor.lead(True)
            self._last_seq = {}
        before = _ms(self._cursor)
        entries = self.store.read_batches(self.store.key("detect"), self._cursor, READ_COUNT)
        batches = []
        for _, text in entries:
            batch = json.loads(text)
            if batch["n"] > self._last_seq.get(batch["w"], 0):  # a retried XADD counts once
                self._last_seq[batch["w"]] = batch["n"]
                batches.append(batch)
        if entries:
            span = (_ms(entries[-1][0]) - (before or _ms(entries[0][0]))) / 1000
            self._cursor = entries[-1][0]
            share = keep_share(batches, monitor.config.max_latencies_per_second,
                               max(span, self.sync_seconds))
            monitor.inbox.append((batches, share))
        elif self._cursor is None:
            self._cursor = "0-0"
        self.store.put_fields([(self.store.key("detectors"),
                                {m: json.dumps(monitor.state(m)) for m in self.models})],
                              LIVE_SECONDS)

    def _follow(self, monitor: SequentialMonitor) -> None:
        self._cursor = None
        monitor.lead(False)
        found = self.store.get_fields([self.store.key("detectors")])[0]
        monitor.published = {m: json.loads(text) for m, text in found.items()}


def _ms(entry_id: str | None) -> int:
    return int(entry_id.partition("-")[0]) if entry_id else 0


def keep_share(batches: list[dict[str, Any]], per_second: float, seconds: float) -> float:
    """The share of the batches' latencies to feed so that at most ``per_second`` a second
    reach the detectors (all of them below that)."""
    values = sum(len(v) for b in batches for _, _, v in b["l"])
    return min(1.0, per_second * seconds / values) if values else 1.0

