"""Running captured inputs through a version offline, in batches, timed on the same batches.

The candidate and the baseline run each batch in turn (which goes first alternates, so neither
always finds the caches warm); the run cost per row counts batches both ran whole. A batch that
fails is run again one record at a time, as the gateway does, so a record that breaks the model
fails alone; outputs that are NaN or infinite count as failures, as they do online. The records
both versions answered in such a batch are batched again afterwards and timed on both, so a
candidate that fails on some rows still gets a run cost, on the rows it can answer.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from canarygate.errors import BadRequest, ModelFailure
from canarygate.replay.source import ReplayError, Served
from canarygate.runtime.model import ModelVersion
from canarygate.runtime.tensors import Tensor, datatype_of


@dataclass
class Answer:
    """One record's outputs from an offline run, or why there are none."""

    outputs: dict[str, np.ndarray] | None
    error: str | None = None


@dataclass
class Runs:
    candidate: list[Answer] = field(default_factory=list)
    baseline: list[Answer] = field(default_factory=list)  # empty without a baseline folder
    candidate_seconds: float = 0.0
    baseline_seconds: float = 0.0
    timed_rows: int = 0  # rows of the batches both versions ran whole
    batches: int = 0
    retried_batches: int = 0


class Progress:
    """Rows done, on stderr: one line redrawn on a terminal, a line per tenth otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done, self.stream = max(total, 1), 0, stream or sys.stderr
        self.tty = self.stream.isatty()
        self._tenth = -1

    def add(self, rows: int) -> None:
        self.done += rows
        share = self.done / self.total
        if self.tty:
            self.stream.write(f"\rreplay: {self.done:,} / {self.total:,} rows "
                              f"({share:.0%})")
        elif int(share * 10) > self._tenth:
            self._tenth = int(share * 10)
            self.stream.write(f"replay: {self.done:,} / {self.total:,} rows ({share:.0%})\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def check_inputs(version: ModelVersion, served: list[Served]) -> tuple[list[Served],
                                                                        dict[str, int]]:
    """The records whose tensors ``version`` accepts, and the others counted by reason.

    Raises ReplayError when it accepts none: the candidate does not fit the captured inputs.
    """
    kept: list[Served] = []
    refused: dict[str, int] = {}
    for record in served:
        try:
            version.feeds([Tensor(n, datatype_of(a), a) for n, a in record.inputs.items()])
        except BadRequest as exc:
            reason = f"inputs the {version.version!r} version refuses: {exc.message}"
            refused[reason] = refused.get(reason, 0) + 1
            continue
        kept.append(record)
    if served and not kept:
        first = next(iter(refused))
        raise ReplayError(f"version {version.version!r} of {version.model!r} does not accept "
                          f"the captured inputs of any of {len(served)} records; "
                          f"first reason: {first.split(': ', 1)[1]}")
    return kept, refused


def batches(served: list[Served], rows: int) -> list[list[Served]]:
    """Consecutive records of at most ``rows`` rows (a larger record alone), whose tensors
    stack: the same shape past the first axis."""
    out: list[list[Served]] = []
    current: list[Served] = []
    size = 0
    for record in served:
        shapes = {n: a.shape[1:] for n, a in record.inputs.items()}
        fits = current and size + record.rows <= rows and shapes == {
            n: a.shape[1:] for n, a in current[0].inputs.items()}
        if current and not fits:
            out.append(current)
            current, size = [], 0
        current.append(record)
        size += record.rows
    if current:
        out.append(current)
    return out


def run_all(candidate: ModelVersion, baseline: ModelVersion | None, served: list[Served],
            batch_rows: int, progress: Progress | None = None) -> Runs:
    runs = Runs()
    groups = batches(served, batch_rows)
    if groups:  # onnxruntime's first run allocates: keep it out of the timing
        for version in (candidate, baseline):
            if version is not None:
                _run_batch(version, groups[0][:1])
    split: list[Served] = []  # records of split batches that both versions answered
    for i, group in enumerate(groups):
        first = len(runs.candidate)
        seconds = _run_group(runs, candidate, baseline, group, swap=bool(i % 2))
        cand, base = seconds.get("candidate"), seconds.get("baseline")
        if cand is not None and (baseline is None or base is not None):
            _timed(runs, cand, base or 0.0, group)
        elif baseline is not None:
            answered = zip(group, runs.candidate[first:], runs.baseline[first:], strict=True)
            split += [r for r, a, b in answered if a.outputs is not None and b.outputs]
        if progress is not None:
            progress.add(sum(r.rows for r in group))
    # A candidate that fails on some rows splits every batch holding one: its cost is then
    # measured again on batches of the records both versions answer.
    for i, group in enumerate(batches(split, batch_rows)):
        timing = Runs()
        seconds = _run_group(timing, candidate, baseline, group, swap=bool(i % 2))
        cand, base = seconds.get("candidate"), seconds.get("baseline")
        if cand is not None and base is not None:
            _timed(runs, cand, base, group)
    if progress is not None:
        progress.close()
    return runs


def _run_group(runs: Runs, candidate: ModelVersion, baseline: ModelVersion | None,
               group: list[Served], swap: bool) -> dict[str, float | None]:
    """Both versions on one batch, in turn (``swap``: the baseline first); each one's run
    time, None for one that had to split the batch."""
    order = [("candidate", candidate), ("baseline", baseline)]
    if swap:
        order.reverse()
    seconds: dict[str, float | None] = {}
    for role, version in order:
        if version is None:
            continue
        answers, took = _run_batch(version, group)
        getattr(runs, role).extend(answers)
        seconds[role] = took
        runs.retried_batches += took is None
    runs.batches += 1
    return seconds


def _timed(runs: Runs, candidate: float, baseline: float, group: list[Served]) -> None:
    runs.candidate_seconds += candidate
    runs.baseline_seconds += baseline
    runs.timed_rows += sum(r.rows for r in group)


def _run_batch(version: ModelVersion, group: list[Served]) -> tuple[list[Answer], float | None]:
    """Each record's answer, and the batch's run time (None when it had to be split)."""
    feeds = {name: np.concatenate([r.inputs[name] for r in group])
             for name in group[0].inputs}
    start = time.perf_counter()
    try:
        results = version.run(feeds, version.output_names)
    except ModelFailure:
        return [_run_one(version, r) for r in group], None
    took = time.perf_counter() - start
    sizes = [r.rows for r in group]
    bounds = np.cumsum(sizes)[:-1]
    # An output not stacked on the first axis (a constant, say) is every record's alike.
    parts = [np.split(a, bounds) if a.ndim and a.shape[0] == sum(sizes) else [a] * len(group)
             for a in results]
    return [_checked(dict(zip(version.output_names, row, strict=True)))
            for row in zip(*parts, strict=True)], took


def _run_one(version: ModelVersion, record: Served) -> Answer:
    try:
        results = version.run(dict(record.inputs), version.output_names)
    except ModelFailure as exc:
        return Answer(None, exc.message)
    return _checked(dict(zip(version.output_names, results, strict=True)))


def _checked(outputs: dict[str, np.ndarray]) -> Answer:
    for name, array in outputs.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return Answer(None, f"output {name!r} is NaN or infinite")
    return Answer(outputs)
