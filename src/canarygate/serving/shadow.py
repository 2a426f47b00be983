"""Shadow runs: the candidate answers the same inputs as the baseline after the baseline's
answer is on its way, and the two answers are compared for the agreement gate.

A request's record waits for its shadow output and is queued with it, so the dataset holds both
answers side by side. At most ``MAX_IN_FLIGHT`` shadow runs are under way; past that a mirror is
dropped and counted (the request itself was answered by the baseline either way).
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING

import numpy as np

from canarygate.errors import ModelFailure
from canarygate.metrics import Metrics
from canarygate.recorder import Record, Recorder
from canarygate.runtime.result import RunResult
from canarygate.runtime.runner import Runner
from canarygate.serving.answer import Answer
from canarygate.stats import ShadowStats
from canarygate.stats.step import first_output

if TYPE_CHECKING:
    from canarygate.serving.observe import DriftSink

MAX_IN_FLIGHT = 64


class Shadow:
    def __init__(self, runner: Runner, metrics: Metrics, recorder: Recorder | None,
                 drift: DriftSink | None, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.runner = runner
        self.metrics = metrics
        self.recorder = recorder
        self.drift = drift
        self.max_in_flight = max_in_flight
        self.tasks: set[asyncio.Task[None]] = set()

    async def mirror(self, answer: Answer, record: Record | None) -> None:
        """Start the candidate's run on ``answer``'s inputs (or count it dropped)."""
        routing = answer.routing
        assert routing is not None and routing.candidate is not None  # mirror says so
        if len(self.tasks) >= self.max_in_flight:
            routing.step_stats.shadow.dropped += 1
            self.metrics.shadow(answer.model, "dropped")
            if record is not None and self.recorder is not None:
                await self.recorder.put_or_wait(record)
            return
        task = asyncio.get_running_loop().create_task(self._run(answer, record))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, answer: Answer, record: Record | None) -> None:
        routing, feeds, served = answer.routing, answer.feeds, answer.outputs
        assert routing is not None and routing.candidate is not None
        assert feeds is not None and served is not None  # only answered requests mirror
        candidate, stats = routing.candidate, routing.step_stats
        started = perf_counter()
        error: str | None = None
        run: RunResult | None = None
        try:
            run = await self.runner.run(candidate, feeds, candidate.output_names,
                                        routing.candidate_timeout)
            if not run.all_finite():
                error = "non-finite output"
        except (ModelFailure, TimeoutError) as exc:
            error = str(exc)
        self.metrics.shadow(answer.model, "failed" if error else "ok")
        outputs = (dict(zip(candidate.output_names, run.outputs, strict=True))
                   if run is not None and not error else None)
        if outputs is None or run is None:
            stats.candidate.record(perf_counter() - started, True, False, None)
        else:
            stats.candidate.record(perf_counter() - started, False, False,
                                   first_output(run.outputs))
            label = candidate.output_names[candidate.label_index]
            compare(stats.shadow, served[label], outputs[label])
            if self.drift is not None:  # the shadow phase's candidate outputs, for output drift
                self.drift.observe(answer.model, candidate.version, "candidate", feeds, outputs)
        if record is not None and self.recorder is not None:
            record.shadow_version = candidate.version
            record.shadow_error = error
            record.shadow_outputs = outputs
            await self.recorder.put_or_wait(record)

    async def drain(self) -> None:
        """Let the runs under way finish (their records are still to be queued)."""
        await asyncio.gather(*list(self.tasks), return_exceptions=True)


def compare(shadow: ShadowStats, base: np.ndarray, cand: np.ndarray) -> None:
    """One request's answers, row by row: do the labels agree (classifiers), or how far apart
    are they (regressors)."""
    rows = base.shape[0] if base.ndim else 1
    shadow.pairs += rows
    if base.size != cand.size:  # a different output shape agrees with nothing
        shadow.labelled = shadow.labelled or base.dtype.kind in "iub"
        return
    base, cand = base.reshape(rows, -1), cand.reshape(rows, -1)
    if base.dtype.kind in "iub":
        shadow.labelled = True
        shadow.agreements += int(np.count_nonzero((base == cand).all(axis=1)))
        return
    shadow.abs_diff_sum += float(np.abs(cand.astype(np.float64) - base).sum())
