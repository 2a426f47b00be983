"""One worker's link to the rollouts it shares with other workers and replicas through Redis.

- **Lease**: the worker holding it is the one controller that acts; it renews it every sync,
  and stops acting at once when a renewal fails or the lease would run out unrenewed (Redis
  away). Its writes carry the lease as a fencing token, so a worker that lost it cannot write.
- **Follow**: every worker reads the stored states every sync (and at once when a change is
  announced on the events channel) and installs any newer one: its router follows within a
  second, and with the last routing it knew while Redis is away.
- **Telemetry**: every sync, each worker ships its cumulative counts of each model's current
  step; the controller judges its own counts merged with every other worker's (a cumulative
  snapshot never counts twice, and a dead worker's last one stays). Drift, the detectors'
  inputs and the last-minute figures go in the same sync (rollout/telemetry.py).
- **Writes**: states and decisions go to Redis on a thread of this link's own, never on the
  event loop; a person's action is refused (503) while Redis is away.

All Redis work happens on threads; the event loop only swaps in what they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from canarygate.config import FeedbackConfig, StateConfig
from canarygate.errors import ConfigError
from canarygate.rollout.redis_store import BUCKET_SECONDS, Fenced, RedisStore, StaleRevision
from canarygate.rollout.state import RolloutState
from canarygate.rollout.telemetry import Telemetry
from canarygate.runtime.registry import ServedModel
from canarygate.stats import StepStats

if TYPE_CHECKING:
    from canarygate.rollout.manager import RolloutManager
    from canarygate.runtime.catalog import VersionCatalog

log = logging.getLogger("canarygate.cluster")

RECENT_DECISIONS = 1000
SHIP_SECONDS = 0.05  # how often predictions go to the shared feedback index
# Bytes Redis spends on a hash field besides the request id and the prediction themselves
# (measured: see the README's "Scale out").
ENTRY_OVERHEAD = 72
RATE_WINDOW = 10.0  # seconds over which the prediction rate (for the index's reach) is taken
WRITE_TRIES = 3
SHUTDOWN_SECONDS = 10.0


@dataclass
class Exchange:
    """What one sync read from Redis, handed back to the event loop."""

    states: dict[str, RolloutState] = field(default_factory=dict)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    steps: dict[tuple[str, int], list[StepStats]] = field(default_factory=dict)
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Cluster:
    def __init__(self, store: RedisStore, config: StateConfig, worker: str,
                 feedback: FeedbackConfig | None = None) -> None:
        self.store = store
        self.config = config
        self.worker = worker
        self.holder: str | None = None  # the lease, while this worker holds it
        self.lease_until = 0.0  # monotonic time the lease runs out unless renewed
        self.available = True
        self.errors = 0  # Redis commands that failed
        self.outages = 0  # times Redis went away
        self.refused = 0  # writes Redis refused: a lost lease, or a newer state stored
        self.dropped = 0  # writes given up after retries
        # The decision log as Redis holds it (its order, the same on every replica), and this
        # worker's own decisions not read back from Redis yet.
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.remote: dict[tuple[str, int], list[StepStats]] = {}
        self._seen: dict[str, int] = {}  # per model, decisions read from Redis so far
        self._diverged: set[str] = set()  # models whose write was refused: follow the store
        self._ids = 0
        self._writes: queue.Queue[tuple[RolloutState | None, dict[str, Any] | None, bool,
                                        str | None, Future[bool]] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="canarygate-cluster",
                                        daemon=True)
        self._writer.start()
        self.wake: asyncio.Event | None = None
        self.synced: asyncio.Event | None = None  # set after each sync
        # The shared feedback index: predictions waiting to be shipped, bounded.
        self.feedback = feedback or FeedbackConfig()
        self.outbox: deque[tuple[Any, ...]] = deque()
        self.outbox_dropped = 0  # predictions not shipped: the outbox was full (Redis away)
        self.shipped = 0
        self.reach_seconds = self.feedback.ttl_seconds  # how long a prediction is kept
        self._rate = (time.monotonic(), 0)
        self._shipper = threading.Thread(target=self._ship_loop, name="canarygate-feedback",
                                         daemon=True)
        self._shipper.start()
        self.telemetry: Telemetry | None = None  # drift, detectors, last minute (if any)

    # -- what the manager asks ---------------------------------------------------------------

    def acting(self) -> bool:
        """This worker holds the lease, renewed recently enough to be sure of it."""
        return self.holder is not None and time.monotonic() < self.lease_until

    def remote_steps(self, model: str, window: int) -> list[StepStats]:
        return self.remote.get((model, window), [])

    # -- the shared feedback index -------------------------------------------------------------

    def offer(self, request_id: str, arrived: float, model: str, version: str, variant: str,
              classifier: bool, predicted: list[Any]) -> None:
        """The request path's part: one bounded append (the shipper thread does the rest)."""
        if len(self.outbox) >= self.config.telemetry_buffer:
            self.outbox_dropped += 1
            return
        self.outbox.append((request_id, arrived, model, version, variant, classifier,
                            predicted))

    def _ship_loop(self) -> None:
        while not self._stop.wait(SHIP_SECONDS):
            self._ship()
        self._ship()

    def _ship(self) -> None:
        batch: list[tuple[Any, ...]] = []
        while self.outbox and len(batch) < 5000:
            batch.append(self.outbox.popleft())
        if not batch:
            return
        entries = {rid: json.dumps(rest) for rid, *rest in batch}
        try:
            self.store.put_predictions(int(time.time() // BUCKET_SECONDS), entries,
                                       self._reach(entries))
            self.shipped += len(batch)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            for item in reversed(batch):  # kept for the next try, within the outbox's bound
                if len(self.outbox) >= self.config.telemetry_buffer:
                    self.outbox_dropped += 1
                else:
                    self.outbox.appendleft(item)

    def _reach(self, entries: dict[str, str]) -> float:
        """Seconds a prediction is kept: the feedback TTL, or less when this worker's rate
        times the bytes of an entry would pass its share of the memory budget."""
        started, counted = self._rate
        now = time.monotonic()
        counted += len(entries)
        if now - started >= RATE_WINDOW:
            rate = counted / (now - started)
            size = ENTRY_OVERHEAD + sum(len(k) + len(v) for k, v in entries.items()) / len(
                entries)
            budget = self.feedback.shared_budget_bytes
            self.reach_seconds = min(self.feedback.ttl_seconds,
                                     budget / max(rate * size, 1e-9))
            started, counted = now, 0
        self._rate = (started, counted)
        return self.reach_seconds

    def fetch_predictions(self, rids: list[str]) -> dict[str, list[Any]]:
        """Predictions another worker answered (blocking: call it off the event loop): the
        newest minute first, back as far as a label may come."""
        now = int(time.time() // BUCKET_SECONDS)
        back = int(self.feedback.ttl_seconds // BUCKET_SECONDS) + 1
        found = self.store.get_predictions(rids, list(range(now, now - back - 1, -1)))
        return {rid: json.loads(text) for rid, text in found.items()}

    def claim_labels(self, labels: dict[str, tuple[float, ...]]) -> dict[str, list[float]]:
        """Claim each label for its request id across the group; the labels some worker
        had already joined (they count once), by request id."""
        claims = {self.store.key("label", rid): json.dumps(list(label))
                  for rid, label in labels.items()}
        earlier = self.store.claim(claims, self.feedback.ttl_seconds)
        return {rid: json.loads(text) for rid, text in zip(labels, earlier, strict=True)
                if text is not None}

    # -- the StateWriter interface -------------------------------------------------------------

    def commit(self, state: RolloutState | None, decision: dict[str, Any] | None,
               fenced: bool = False) -> Future[bool]:
        """Queue the write; the future says whether Redis took it. A controller's write
        carries the lease it was decided under: one decided under a lease since lost is
        refused even if this worker holds a new lease by the time it is written (a write
        queued while Redis was away must not land under the next lease)."""
        if decision is not None:
            self._ids += 1
            decision.setdefault("id", f"{self.worker}/{self._ids}")
            self.pending.setdefault(decision["model"], []).append(decision)
        with self._idle:
            self._pending += 1
        done: Future[bool] = Future()
        self._writes.put((state, decision, fenced, self.holder if fenced else None, done))
        return done

    async def resync(self) -> None:
        """Wait for a sync that starts now (a refused write's model then follows the store)."""
        if self.wake is None or self.synced is None:
            return
        self.synced.clear()
        self.wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.synced.wait(), 5 * self.config.sync_seconds + 5)

    def decisions(self, model: str) -> list[dict[str, Any]]:
        return [*self.recent.get(model, ()), *self.pending.get(model, ())][-RECENT_DECISIONS:]

    def writable(self) -> bool:
        return self.available

    def flush(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        self._stop.set()
        self._writes.put(None)
        self._writer.join(timeout)
        self._shipper.join(timeout)
        if self.holder is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self.store.release(self.holder)  # the next controller need not wait it out
            self.holder = None

    def load_decisions(self, models: list[str]) -> None:
        """At start: the recent log of every model (so any replica serves the same log)."""
        for model in models:
            self._seen[model], found = self.store.decisions_since(model, 0, RECENT_DECISIONS)
            for decision in found:
                self._remember(decision)

    def _remember(self, decision: dict[str, Any]) -> None:
        """A decision read from Redis, in Redis's order; no longer this worker's pending."""
        model = decision.get("model", "")
        self.recent.setdefault(model, deque(maxlen=RECENT_DECISIONS)).append(decision)
        pending = self.pending.get(model)
        if pending and decision.get("id") is not None:
            self.pending[model] = [d for d in pending if d.get("id") != decision["id"]]

    def _write_loop(self) -> None:
        while (item := self._writes.get()) is not None:
            state, decision, fenced, token, done = item
            try:
                done.set_result(self._write(state, decision, fenced, token))
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _write(self, state: RolloutState | None, decision: dict[str, Any] | None,
               fenced: bool, token: str | None) -> bool:
        for attempt in range(WRITE_TRIES):
            if fenced and (token is None or token != self.holder):
                self._refused(state, decision, "this worker no longer holds the lease it "
                              "decided under")
                return False
            try:
                self.store.commit(state, decision, token)
                return True
            except (Fenced, StaleRevision) as exc:
                self._refused(state, decision, str(exc))
                return False
            except (redis.RedisError, OSError) as exc:
                self._failed(exc)
                if self._stop.wait(0.2 * 2 ** attempt):
                    break
        self.dropped += 1
        log.error("a rollout write was given up after %d tries (Redis away)", WRITE_TRIES)
        self._give_way(state, decision)
        return False

    def _refused(self, state: RolloutState | None, decision: dict[str, Any] | None,
                 why: str) -> None:
        """A write Redis must not take: what this worker installed gives way to the store's."""
        self.refused += 1
        model = self._give_way(state, decision)
        log.warning("a rollout write of %r was not stored (%s); following the store", model,
                    why)

    def _give_way(self, state: RolloutState | None, decision: dict[str, Any] | None) -> str:
        """A write that was not stored: this worker follows the store for its model again,
        and its decision leaves the log it serves."""
        model: str = state.model if state is not None else (decision or {}).get("model", "")
        self._diverged.add(model)
        if decision is not None:
            self.pending[model] = [d for d in self.pending.get(model, [])
                                   if d is not decision]
        return model

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            self.outages += 1
            log.error("Redis is away (%s): serving the last routing known; the controller "
                      "stops acting and people's actions are refused until it returns", exc)
        self.available = False

    # -- the sync loop ---------------------------------------------------------------------------

    async def run(self, manager: RolloutManager, catalog: VersionCatalog) -> None:
        """Every ``sync_seconds`` (or at once on an announced change): ship this worker's
        counts, hold or seek the lease, read states, versions registered on other workers,
        their counts and new decisions."""
        table, models = manager.table, list(manager.registry.models)
        loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.synced = asyncio.Event()
        listener = threading.Thread(target=self._listen, args=(loop, self.wake),
                                    name="canarygate-events", daemon=True)
        listener.start()
        while True:
            counts = {(m, (r := table.get(m)).window): json.dumps(r.step_stats.to_json())
                      for m in models if m in table}
            diverged, self._diverged = frozenset(self._diverged), set()
            if self.telemetry is not None:
                self.telemetry.capture(time.perf_counter(), time.time())
            exchange = await asyncio.to_thread(self._sync, counts)
            if exchange is None:
                self._diverged |= diverged
            else:
                self.remote = exchange.steps
                for decisions in exchange.decisions.values():
                    for decision in decisions:
                        self._remember(decision)
                await _load_new_versions(catalog, exchange.versions)
                manager.adopt(exchange.states, diverged)
            self.synced.set()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.config.sync_seconds)

    def _sync(self, counts: dict[tuple[str, int], str]) -> Exchange | None:
        try:
            self._lease()
            self.store.put_steps(self.worker, counts)
            exchange = Exchange(states=self.store.load(), versions=self.store.load_versions())
            if counts:  # every worker shows the merged figures, not only the controller
                found = self.store.get_steps(list(counts))
                exchange.steps = {
                    key: [StepStats.from_json(json.loads(text))
                          for worker, text in by_worker.items() if worker != self.worker]
                    for key, by_worker in found.items()}
            exchange.decisions = self._new_decisions(list(exchange.states))
            if self.telemetry is not None:
                self.telemetry.sync(self.acting())
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if not self.available:
            log.warning("Redis is back: following the stored rollouts again")
        self.available = True
        return exchange

    def _lease(self) -> None:
        seconds = self.config.lease_seconds
        started = time.monotonic()
        if self.holder is not None and not self.store.renew(self.holder, seconds):
            log.warning("the controller's lease %s passed to another worker", self.holder)
            self.holder = None
        if self.holder is None:
            self.holder = self.store.acquire(self.worker, seconds)
            if self.holder is not None:
                log.info("this worker holds the controller's lease (%s)", self.holder)
        if self.holder is not None:
            # Counted from before the command: a lease never outlives what Redis granted.
            self.lease_until = started + seconds * 0.8

    def _new_decisions(self, models: list[str]) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for model in models:
            self._seen[model], found = self.store.decisions_since(
                model, self._seen.get(model, 0), RECENT_DECISIONS)
            if found:
                out[model] = found
        return out

    def _listen(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        """Announced changes wake the sync loop at once (it polls anyway: a lost message, or
        Redis away, only delays a change to the next sync)."""
        while not self._stop.is_set():
            try:
                pubsub = self.store.client.pubsub(  # type: ignore[no-untyped-call]
                    ignore_subscribe_messages=True)
                pubsub.subscribe(self.store.channel)
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        loop.call_soon_threadsafe(wake.set)
            except (redis.RedisError, OSError, ValueError):
                self._stop.wait(1.0)
            except RuntimeError:  # the loop closed: the gateway is stopping
                return


async def _load_new_versions(catalog: VersionCatalog, stored: dict[str, dict[str, str]]) -> None:
    """Versions another worker registered: loaded here too (off the event loop), so a rollout
    naming one is served alike everywhere."""
    for model, versions in stored.items():
        served: ServedModel | None = catalog.registry.models.get(model)
        if served is None:
            continue
        for version, path in versions.items():
            if version in served.versions:
                continue
            try:
                loaded = await asyncio.to_thread(catalog.load, served, version, path)
                await asyncio.to_thread(catalog.read_profile, served, loaded)
            except ConfigError as exc:
                log.error("version %r of %r, registered on another worker, cannot be loaded "
                          "here: %s", version, model, exc)
                continue
            catalog.adopt(served, loaded)
