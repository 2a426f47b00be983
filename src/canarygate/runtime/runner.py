"""Runs model versions on a named, sized thread pool so the event loop never waits on a model.

A version with micro-batching on goes through its ``Batcher`` (one hand-off per batch); one
with it off hands each request to a thread. Either way a timeout limits the run itself: its
clock starts when a thread starts the run, so time spent waiting for a free thread never counts
against it. It is a timer on the executor's own future, not ``asyncio.wait_for``: that wraps
the run in another task, which costs extra trips round a busy event loop, so a timed run (the
candidate) would answer later than an untimed one (the baseline) for reasons that are not the
model's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter

import numpy as np

from canarygate.runtime.batcher import Batcher
from canarygate.runtime.model import ModelVersion
from canarygate.runtime.result import Deadline, RunResult

__all__ = ["RunResult", "Runner"]


def _timed(version: ModelVersion, feeds: dict[str, np.ndarray], names: tuple[str, ...],
           submitted: float, on_start: Callable[[], None] | None) -> RunResult:
    started = perf_counter()
    if on_start is not None:
        on_start()
    outputs = version.run(feeds, names)
    return RunResult(outputs, started - submitted, perf_counter() - started)


class Runner:
    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="canarygate-infer")
        self.batchers: dict[ModelVersion, Batcher] = {}

    def batcher(self, version: ModelVersion) -> Batcher | None:
        """The version's batcher (made on first use, inside the loop); None when it has none."""
        found = self.batchers.get(version)
        if found is None and version.batching is not None:
            b = version.batching
            found = self.batchers[version] = Batcher(
                version, self._pool, max_rows=b.max_rows, max_wait=b.max_wait_us / 1e6,
                max_in_flight=b.max_in_flight, inline_max=b.inline_max_us / 1e6)
        return found

    async def run(
        self,
        version: ModelVersion,
        feeds: dict[str, np.ndarray],
        names: tuple[str, ...],
        timeout: float | None = None,
    ) -> RunResult:
        """The run's outputs and timings; raises TimeoutError when the run takes longer than
        ``timeout`` seconds (the thread finishes it regardless: onnxruntime cannot be
        interrupted)."""
        batcher = self.batcher(version)
        if batcher is not None:
            return await batcher.submit(feeds, names, timeout)
        loop = asyncio.get_running_loop()
        if timeout is None:
            return await loop.run_in_executor(self._pool, _timed, version, feeds, names,
                                              perf_counter(), None)
        deadline = Deadline(version, timeout)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = not future.done()
            future.cancel()

        def arm() -> None:
            if not future.done():
                deadline.start(loop, expire)

        def started() -> None:  # on the worker thread
            loop.call_soon_threadsafe(arm)

        future = loop.run_in_executor(self._pool, _timed, version, feeds, names,
                                      perf_counter(), started)
        try:
            result = await future
        except asyncio.CancelledError:
            if expired:
                raise deadline.error() from None
            raise
        finally:
            deadline.cancel()
        return deadline.settle(result)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
