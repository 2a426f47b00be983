"""Micro-batching: concurrent runs of one model version coalesced into one onnxruntime call.

Handing a run to a thread costs more than running these models (docs/statistics.md §5: +120 µs
a request, the run itself 10-20 µs), so the hand-off is paid once per batch. A batch opens with its
first request and is dispatched when it holds ``max_rows`` rows or when ``max_wait`` has passed,
and only while fewer than ``max_in_flight`` of this version's batches are running: under load,
requests gather while a batch runs, which is when gathering costs no latency. uvloop's timers
have millisecond resolution; a wait below 1 ms closes the batch at the next turn of the event
loop, by which time every request read in the same turn has joined it.

Rows are concatenated and the outputs split on the worker thread. A batch that fails is run
again one request at a time, so a request that breaks the model fails alone, as it would
unbatched, and no caller is left waiting. A caller's timeout counts from the moment its batch
starts running, as in ``Runner``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from time import perf_counter, thread_time

import numpy as np

from canarygate.errors import ModelFailure
from canarygate.runtime.model import ModelVersion
from canarygate.runtime.result import Deadline, RunResult, finite

TIMER_RESOLUTION = 0.001  # seconds; shorter waits mean "the next turn of the loop"


class RunCost:
    """What a run of one version is expected to cost for a number of rows: a straight line
    fitted by least squares to recent runs, each run weighing ``1 - decay`` as much as the
    next. Unknown until ``probes`` runs were timed, so a version's first batches always run on
    a thread. Runs are timed in the running thread's CPU time: wall time would count the wait
    for the GIL after the run, which other threads' work inflates.

    The expected cost, not the least: in a server a run finds its caches cold, and a one-row
    run of a demo model costs 40 µs at best but 80 µs typically. A line through the least
    run time with the mean slope (this class's first form) read that spread as a cost per row
    of 20-40 µs against the 5 µs there is, and sent half of a busy demo's batches to a thread,
    whose hand-off costs more than the run. One run's preemption is capped at ``spike`` times
    the expected cost, so a single stall does not move the line."""

    def __init__(self, probes: int = 4, decay: float = 0.02, spike: float = 4.0) -> None:
        self.probes = probes
        self.decay = decay
        self.spike = spike
        self.runs = 0
        # Weighted means of rows, seconds, rows squared, rows times seconds.
        self._x = self._y = self._xx = self._xy = 0.0

    def learn(self, seconds: float, rows: int) -> None:
        if self.runs >= self.probes:
            seconds = min(seconds, self.spike * self._line(rows))
        self.runs += 1
        a = max(self.decay, 1.0 / self.runs)  # a plain mean until there are enough runs
        self._x += a * (rows - self._x)
        self._y += a * (seconds - self._y)
        self._xx += a * (rows * rows - self._xx)
        self._xy += a * (rows * seconds - self._xy)

    def predict(self, rows: int) -> float | None:
        return None if self.runs < self.probes else self._line(rows)

    def _line(self, rows: int) -> float:
        spread = self._xx - self._x * self._x
        if spread >= 0.25:  # batches of more than one size: fit the line
            slope = max(0.0, (self._xy - self._x * self._y) / spread)
            fixed = self._y - slope * self._x
            if fixed >= 0.0:
                return fixed + slope * rows
        # One size seen (or a line through negative cost): larger batches cost in proportion.
        return self._y * max(1.0, rows / self._x) if self._x > 0 else self._y


@dataclass(slots=True)
class _Call:
    feeds: dict[str, np.ndarray]
    names: tuple[str, ...]
    rows: int
    future: asyncio.Future[RunResult]
    submitted: float
    deadline: Deadline | None  # fails the call at its timeout, once its batch started


class Batcher:
    """The batches of one model version."""

    def __init__(self, version: ModelVersion, pool: Executor, *, max_rows: int,
                 max_wait: float, max_in_flight: int, inline_max: float = 0.0) -> None:
        self.version = version
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.max_in_flight = max_in_flight
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._queue: deque[_Call] = deque()
        self._queued_rows = 0
        self._in_flight = 0
        self._timer: asyncio.Handle | None = None
        self._due = False  # the oldest queued call has waited long enough
        self.inline_max = inline_max
        self.cost = RunCost()
        self.batches = 0  # dispatched, for the statistics
        self.rows = 0
        self.inline_batches = 0

    def submit(self, feeds: dict[str, np.ndarray], names: tuple[str, ...],
               timeout: float | None) -> asyncio.Future[RunResult]:
        first = next(iter(feeds.values()))
        rows = first.shape[0] if first.ndim else 1
        future: asyncio.Future[RunResult] = self._loop.create_future()
        deadline = Deadline(self.version, timeout) if timeout is not None else None
        self._queue.append(_Call(feeds, names, rows, future, perf_counter(), deadline))
        self._queued_rows += rows
        if self._timer is None and not self._due:
            if self.max_wait < TIMER_RESOLUTION:
                self._timer = self._loop.call_soon(self._wait_over)
            else:
                self._timer = self._loop.call_later(self.max_wait, self._wait_over)
        self._pump()
        return future

    def _wait_over(self) -> None:
        self._timer = None
        self._due = True
        self._pump()

    def _pump(self) -> None:
        while (self._queue and self._in_flight < self.max_in_flight
               and (self._due or self._queued_rows >= self.max_rows)):
            self._dispatch()
        if not self._queue:
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _dispatch(self) -> None:
        calls = [self._queue.popleft()]
        rows = calls[0].rows
        while self._queue and rows + self._queue[0].rows <= self.max_rows:
            call = self._queue.popleft()
            calls.append(call)
            rows += call.rows
        self._queued_rows -= rows
        self._in_flight += 1
        self.batches += 1
        self.rows += rows
        predicted = self.cost.predict(rows)
        if predicted is not None and predicted <= self.inline_max:
            self.inline_batches += 1
            self._finish(calls, _execute(self.version, calls, rows, None))
            return
        timed = [c for c in calls if c.deadline is not None]
        on_start = (partial(self._loop.call_soon_threadsafe, self._arm, timed)
                    if timed else None)
        done = self._loop.run_in_executor(self._pool, _execute, self.version, calls, rows,
                                          on_start)
        done.add_done_callback(partial(self._finished, calls))

    def _finished(self, calls: list[_Call],
                  done: asyncio.Future[list[RunResult | Exception]]) -> None:
        if done.cancelled():
            self._finish(calls, RuntimeError("the gateway stopped before the model ran"))
        else:
            self._finish(calls, done.exception() or done.result())

    def _arm(self, timed: list[_Call]) -> None:
        """On the loop, when the batch started: fail callers whose timeout passes first."""
        for call in timed:
            if not call.future.done() and call.deadline is not None:
                call.deadline.start(self._loop, partial(self._expire, call))

    @staticmethod
    def _expire(call: _Call) -> None:
        if not call.future.done() and call.deadline is not None:
            call.future.set_exception(call.deadline.error())

    def _finish(self, calls: list[_Call],
                outcome: list[RunResult | Exception] | BaseException) -> None:
        self._in_flight -= 1
        if isinstance(outcome, list):
            first, last = outcome[0], outcome[-1]
            # One run answered them all (no failure, no rerun one by one): learn its cost.
            if (isinstance(first, RunResult) and isinstance(last, RunResult)
                    and first.run_seconds == last.run_seconds and first.cpu_seconds is not None):
                self.cost.learn(first.cpu_seconds, first.batch_rows)
        for i, call in enumerate(calls):
            if call.deadline is not None:
                call.deadline.cancel()
            if call.future.done():  # timed out, or its request went away
                continue
            result = outcome[i] if isinstance(outcome, list) else outcome
            if isinstance(result, BaseException):
                call.future.set_exception(result)
                continue
            try:
                call.future.set_result(call.deadline.settle(result) if call.deadline else result)
            except TimeoutError as exc:
                call.future.set_exception(exc)
        self._due = self._due or bool(self._queue)  # leftovers have waited already
        self._pump()


def _execute(version: ModelVersion, calls: list[_Call], rows: int,
             on_start: Callable[[], object] | None) -> list[RunResult | Exception]:
    """On a worker thread: one run for the whole batch, split back into the callers' rows."""
    started = perf_counter()
    if on_start is not None:
        on_start()
    cpu = thread_time()
    names = version.output_names
    try:
        if len(calls) == 1:
            outputs = version.run(calls[0].feeds, names)
        else:
            feeds = {name: np.concatenate([c.feeds[name] for c in calls])
                     for name in calls[0].feeds}
            outputs = version.run(feeds, names)
    except ModelFailure as exc:
        if len(calls) == 1:
            return [exc]
        return [_alone(version, call, started) for call in calls]
    seconds = perf_counter() - started
    cpu = thread_time() - cpu
    # One finiteness check for the whole batch; only a batch with NaN or infinity in it
    # leaves each caller to check its own rows.
    all_finite = True if finite(outputs) else None
    results: list[RunResult | Exception] = []
    offset = 0
    for call in calls:
        end = offset + call.rows
        parts = dict(zip(names, (o[offset:end] if o.ndim else o for o in outputs), strict=True))
        results.append(RunResult([parts[n] for n in call.names], started - call.submitted,
                                 seconds, rows, all_finite, cpu, started))
        offset = end
    return results


def _alone(version: ModelVersion, call: _Call, batch_started: float) -> RunResult | Exception:
    started = perf_counter()
    try:
        outputs = version.run(call.feeds, call.names)
    except ModelFailure as exc:
        return exc
    return RunResult(outputs, batch_started - call.submitted, perf_counter() - started,
                     call.rows)
