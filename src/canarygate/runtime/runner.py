"""Runs model versions on a named, sized thread pool so the event loop never waits on a model.

A timeout limits the run itself: its clock starts when a thread starts the run, so time spent
waiting for a free thread never counts against it. It is a timer on the executor's own future,
not ``asyncio.wait_for``: that wraps the run in another task, which costs extra trips round a
busy event loop, so a timed run (the candidate) would answer later than an untimed one (the
baseline) for reasons that are not the model's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from canarygate.runtime.model import ModelVersion


@dataclass(slots=True)
class RunResult:
    outputs: list[np.ndarray]
    queue_seconds: float  # from hand-off to a thread starting the run
    run_seconds: float  # the run itself


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
        loop = asyncio.get_running_loop()
        if timeout is None:
            return await loop.run_in_executor(self._pool, _timed, version, feeds, names,
                                              perf_counter(), None)
        timer: asyncio.TimerHandle | None = None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = not future.done()
            future.cancel()

        def arm() -> None:
            nonlocal timer
            if not future.done():
                timer = loop.call_later(timeout, expire)

        def started() -> None:  # on the worker thread
            loop.call_soon_threadsafe(arm)

        future = loop.run_in_executor(self._pool, _timed, version, feeds, names,
                                      perf_counter(), started)
        try:
            return await future
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError(f"{version.model} version {version.version} took longer "
                                   f"than {timeout * 1000:.0f} ms") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
