"""What a run of a model version gives back, and how running out of time is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from canarygate.runtime.model import ModelVersion


@dataclass(slots=True)
class RunResult:
    outputs: list[np.ndarray]
    queue_seconds: float  # from hand-off to a thread starting the run
    run_seconds: float  # the run itself (the whole batch's, when batched)
    batch_rows: int = 1  # rows in the onnxruntime call that answered
    finite_checked: bool | None = None  # every float output finite; None: not checked yet
    cpu_seconds: float | None = None  # the running thread's CPU time for the run (batches)
    started: float | None = None  # when the run began: the run's identity, shared by a batch

    def all_finite(self) -> bool:
        """Whether every float output is finite (checked once per batch when batched)."""
        if self.finite_checked is None:
            self.finite_checked = finite(self.outputs)
        return self.finite_checked


def finite(outputs: list[np.ndarray]) -> bool:
    return all(o.dtype.kind != "f" or bool(np.isfinite(o).all()) for o in outputs)


class Deadline:
    """A run's time limit, counted from the moment a thread starts the run, so time spent
    waiting for a free thread never counts against it. A timer fails the waiting caller once
    the limit passes (the thread finishes the run regardless: onnxruntime cannot be
    interrupted); a run that finishes first is still judged by its own clock (``settle``)."""

    __slots__ = ("limit", "timer", "version")

    def __init__(self, version: ModelVersion, limit: float) -> None:
        self.version = version
        self.limit = limit
        self.timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, expire: Callable[[], object]) -> None:
        """On the loop, when the run started: ``expire`` is called once the limit passes."""
        self.timer = loop.call_later(self.limit, expire)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def settle(self, result: RunResult) -> RunResult:
        """The result, or TimeoutError when the run itself took longer than the limit."""
        self.cancel()
        if result.run_seconds > self.limit:
            raise run_timeout(self.version, self.limit, result.run_seconds)
        return result

    def error(self) -> TimeoutError:
        return run_timeout(self.version, self.limit, None)


def run_timeout(version: ModelVersion, timeout: float, took: float | None) -> TimeoutError:
    limit = f"{timeout * 1000:g} ms"
    if took is None:
        return TimeoutError(f"{version.model} version {version.version} took longer than {limit}")
    return TimeoutError(f"{version.model} version {version.version} took "
                        f"{took * 1000:.3g} ms, over its {limit}")
