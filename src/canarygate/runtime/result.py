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


def run_timeout(version: ModelVersion, timeout: float, took: float | None) -> TimeoutError:
    limit = f"{timeout * 1000:g} ms"
    if took is None:
        return TimeoutError(f"{version.model} version {version.version} took longer than {limit}")
    return TimeoutError(f"{version.model} version {version.version} took "
                        f"{took * 1000:.3g} ms, over its {limit}")
