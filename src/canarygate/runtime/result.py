"""What a run of a model version gives back, and how running out of time is reported."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canarygate.runtime.model import ModelVersion


@dataclass(slots=True)
class RunResult:
    outputs: list[np.ndarray]
    queue_seconds: float  # from hand-off to a thread starting the run
    run_seconds: float  # the run itself (the whole batch's, when batched)
    batch_rows: int = 1  # rows in the onnxruntime call that answered
    finite: bool | None = None  # every float output finite; None when not checked yet
    cpu_seconds: float | None = None  # the running thread's CPU time for the run (batches)

    def all_finite(self) -> bool:
        """Whether every float output is finite (checked once per batch when batched)."""
        if self.finite is None:
            self.finite = finite(self.outputs)
        return self.finite


def finite(outputs: list[np.ndarray]) -> bool:
    return all(o.dtype.kind != "f" or bool(np.isfinite(o).all()) for o in outputs)


def run_timeout(version: ModelVersion, timeout: float, took: float | None) -> TimeoutError:
    limit = f"{timeout * 1000:g} ms"
    if took is None:
        return TimeoutError(f"{version.model} version {version.version} took longer than {limit}")
    return TimeoutError(f"{version.model} version {version.version} took "
                        f"{took * 1000:.3g} ms, over its {limit}")
