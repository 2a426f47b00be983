"""The one seam where an answer's telemetry leaves the request path.

``Observer.answered`` is called once per prediction request, whatever its outcome, and hands it
to every consumer: the Prometheus request counter, the rollout step's counters, the per-variant
live statistics, the drift buffer, the latency detectors, the feedback index and the dataset
recorder (through a shadow run when the candidate mirrors the request). Each consumer's part is
O(1): counters, histogram inserts, bounded appends. Analysis happens later, off this path.

The consumers that belong to the control path (drift, detectors) are reached through the small
protocols below, so the request path imports none of their code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

import numpy as np

from canarygate.errors import Conflict
from canarygate.feedback import FeedbackBook, Prediction, packed
from canarygate.feedback.index import Joined
from canarygate.metrics import Metrics
from canarygate.recorder import FeedbackRecord, Record, Recorder
from canarygate.router import RoutingTable
from canarygate.serving.answer import Answer
from canarygate.serving.shadow import Shadow
from canarygate.stats.live import LiveStats
from canarygate.stats.step import first_output


class DriftSink(Protocol):
    def observe(self, model: str, version: str, variant: str, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray]) -> None: ...


class DetectorSink(Protocol):
    def observe_latency(self, model: str, version: str, seconds: float) -> None: ...

    def observe_errors(self, model: str, version: str, classifier: bool,
                       errors: list[float], now: float | None = None) -> None: ...


class SharedFeedback(Protocol):
    """The feedback index other workers and replicas share (Redis): predictions go in off
    the request path, and a label may arrive at a worker that did not answer."""

    def offer(self, request_id: str, arrived: float, model: str, version: str, variant: str,
              classifier: bool, predicted: list[Any]) -> None: ...

    def fetch_predictions(self, rids: list[str]) -> dict[str, list[Any]]: ...

    def claim_labels(self, labels: dict[str, tuple[float, ...]]) -> dict[str, list[float]]: ...


GONE = "the client went away before the answer was sent"
"""A prediction whose client left before its answer could be sent is recorded as 499 with
this error (the status nginx gives it), never as the answer nobody received."""

FETCH_TRIES = 4  # a label sent right after its answer may beat the prediction's shipping
FETCH_PAUSE = 0.1  # seconds between two looks


class Observer:
    def __init__(self, metrics: Metrics, live: LiveStats, feedback: FeedbackBook,
                 table: RoutingTable, *, recorder: Recorder | None = None,
                 drift: DriftSink | None = None, detectors: DetectorSink | None = None,
                 shadow: Shadow | None = None, shared: SharedFeedback | None = None) -> None:
        self.metrics = metrics
        self.live = live
        self.feedback = feedback
        self.table = table
        self.recorder = recorder
        self.drift = drift
        self.detectors = detectors
        self.shadow = shadow
        self.shared = shared

    async def answered(self, answer: Answer, gone: Callable[[], bool] | None = None) -> bool:
        """Every consumer's share of one answer, before it is sent (under the dataset's block
        policy, a full queue holds the answer back rather than lose its record). ``gone``
        says whether the client has left: then nothing can be sent, and the answer is counted
        and recorded as 499, not as what it would have been. True when the answer is to be
        sent. Past the one wait (for the queue's room) nothing here awaits, so what is
        recorded is what the connection allows at the moment the answer is sent."""
        now = perf_counter()
        elapsed = now - answer.started
        recorder = self.recorder
        sampled = recorder is not None and recorder.sampled()
        if sampled and recorder is not None:
            await recorder.wait_for_room()
        sending = gone is None or not gone()
        if not sending:
            answer.failed(499, GONE)
        model, version, variant = answer.model, answer.version_label, answer.variant
        self.metrics.request(model, version, variant, answer.protocol, answer.status)
        if answer.routing is not None:
            self._step(answer)
        run = answer.run
        if version:
            self.live.get(model, version, variant, now).record(
                now, elapsed, answer.status, answer.rows, run.queue_seconds if run else None,
                run.run_seconds if run else None, run.batch_rows if run else 0)
            if answer.status == 200 and self.detectors is not None:
                self.detectors.observe_latency(model, version, elapsed)
        if answer.outputs is not None and answer.feeds is not None:
            self._served(answer)
        record = self._record(answer, elapsed) if sampled else None
        if answer.mirror and self.shadow is not None:
            await self.shadow.mirror(answer, record)
        elif record is not None and recorder is not None:
            recorder.put(record)  # room was made above, and nothing has awaited since
        return sending

    def abandoned(self, answer: Answer) -> None:
        """The client went away before its request was whole: counted, nothing recorded."""
        self.metrics.request(answer.model, answer.version_label, answer.variant,
                             answer.protocol, 499)

    def _step(self, answer: Answer) -> None:
        """The rollout step's counters. A candidate that failed counts against the candidate,
        whatever the baseline then did for it; the baseline's own failures count as the
        candidate's do, or a candidate no worse than the baseline would look worse."""
        routing, run, keyed = answer.routing, answer.run, answer.key is not None
        assert routing is not None  # only routed answers come here
        stats = routing.step_stats
        if answer.fallback is not None:
            assert routing.candidate is not None  # a fallback is from the candidate
            self.metrics.candidate_failure(answer.model, routing.candidate.version,
                                           answer.fallback)
            stats.candidate.record(0.0, True, keyed, None)
        elif answer.variant == "candidate" and run is not None:
            stats.candidate.record(answer.ran - answer.started, False, keyed,
                                   first_output(run.outputs), run.started)
        elif answer.variant == "baseline":
            failed = run is None or not run.all_finite() or (
                routing.candidate is not None and run.run_seconds > routing.candidate_timeout)
            stats.baseline.record(answer.ran - answer.started, failed, keyed,
                                  first_output(run.outputs) if run is not None else None,
                                  run.started if run is not None else None)

    def _served(self, answer: Answer) -> None:
        version = answer.version
        assert version is not None and answer.outputs is not None and answer.feeds is not None
        if self.drift is not None:
            self.drift.observe(answer.model, version.version, answer.variant, answer.feeds,
                               answer.outputs)
        label = answer.outputs[version.output_names[version.label_index]]
        rows = label.reshape(label.shape[0], -1)[:, 0] if label.ndim else label.reshape(1)
        self.feedback.remember(answer.request_id, answer.arrived, answer.model, version.version,
                               answer.variant, version.classifier, packed(rows))
        if self.shared is not None:
            self.shared.offer(answer.request_id, answer.arrived, answer.model, version.version,
                              answer.variant, version.classifier, rows.tolist())

    def _record(self, answer: Answer, elapsed: float) -> Record:
        routing, run = answer.routing, answer.run
        return Record(
            time=answer.arrived, request_id=answer.request_id, model=answer.model,
            version=answer.version_label, variant=answer.variant,
            routing=routing_reason(answer), step=routing.step if routing else -1,
            weight=routing.weight if routing else 0.0, protocol=answer.protocol,
            status=answer.status, error=answer.error, inputs=answer.feeds,
            outputs=answer.outputs, queue_ms=run.queue_seconds * 1000 if run else 0.0,
            inference_ms=run.run_seconds * 1000 if run else 0.0, total_ms=elapsed * 1000,
            batch_size=run.batch_rows if run else 0)

    async def join_labels(self, model: str, items: list[Any], now: float) -> list[Joined]:
        """Feedback items joined to their predictions (all checked before any applies; see
        ``FeedbackBook.apply``); each new label goes to the judgement and the dataset."""
        if self.shared is None:
            results = self.feedback.apply(model, items, now)
        else:
            results = await self._join_shared(model, items, now)
        for joined in results:
            if joined.outcome != "recorded":
                continue
            self.labelled(joined.prediction, joined.errors)
            if self.recorder is not None:
                # Under the block policy a full queue makes this wait, as a prediction would.
                await self.recorder.put_or_wait(FeedbackRecord(
                    now, joined.request_id, model, joined.prediction.version,
                    joined.prediction.variant, list(joined.label),
                    list(joined.prediction.predicted)))
        return results

    async def _join_shared(self, model: str, items: list[Any], now: float) -> list[Joined]:
        """Predictions another worker answered are fetched into this one's index first; a
        label some worker joined already is a duplicate here too (it counts once)."""
        assert self.shared is not None  # only with a shared index
        rids = {item.get("request_id") for item in items if isinstance(item, dict)}
        missing = [r for r in rids if isinstance(r, str) and self.feedback.get(r) is None]
        for attempt in range(FETCH_TRIES if missing else 0):
            for rid, entry in (await asyncio.to_thread(self.shared.fetch_predictions,
                                                       missing)).items():
                arrived, model_, version, variant, classifier, predicted = entry
                values = np.asarray(predicted)
                self.feedback.remember(rid, arrived, model_, version, variant, classifier,
                                       packed(values))
            missing = [r for r in missing if self.feedback.get(r) is None]
            if not missing or attempt == FETCH_TRIES - 1:
                break
            await asyncio.sleep(FETCH_PAUSE)
        checked = self.feedback.check(model, items, now)
        earlier = await asyncio.to_thread(self.shared.claim_labels,
                                          {rid: label for _, rid, label in checked})
        for _, rid, label in checked:
            if rid in earlier:
                if tuple(earlier[rid]) != label:
                    raise Conflict(f"the prediction {rid!r} already has a different label")
                self.feedback.labels[rid] = label  # joined on another worker: a duplicate
        return self.feedback.join(checked)

    def labelled(self, prediction: Prediction, errors: list[float]) -> None:
        """Feedback joined a prediction: its rows' errors (0/1 wrong, or absolute) go to the
        version's detectors and, when the prediction was routed in the current rollout to a
        version that still plays that part, to the step's counters."""
        if self.detectors is not None:
            self.detectors.observe_errors(prediction.model, prediction.version,
                                          prediction.classifier, errors)
        if prediction.model not in self.table:
            return
        routing = self.table.get(prediction.model)
        if routing.candidate is None:
            return
        stats = routing.step_stats
        if prediction.variant == "candidate" and prediction.version == routing.candidate.version:
            stats.candidate.label(prediction.classifier, errors)
        elif prediction.variant == "baseline" and prediction.version == routing.baseline.version:
            stats.baseline.label(prediction.classifier, errors)
        else:
            return
        if not prediction.classifier:  # the two-sample test on a regressor's errors
            mine = prediction.variant == "candidate"
            stats.bets.add(errors if mine else [], [] if mine else errors,
                           routing.weight / 100, prediction.time)


def routing_reason(answer: Answer) -> str:
    """Why this version answered, as the dataset records it."""
    if answer.variant in ("pinned", "fallback"):
        return answer.variant
    if not answer.variant:
        return ""
    return "sticky" if answer.key is not None else "weight"

