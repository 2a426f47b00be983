"""What replay reads: one model's served predictions and their labels, from any segments.

JSON Lines segments are read with the dataset reader (torn lines skipped and counted). Parquet
segments are read too, except those that are the closed copy of a JSON Lines segment still
present (the writer keeps both), so nothing is counted twice; a single Parquet file (what
``canarygate dataset export`` writes) is read as it is. Every record left out is counted under
the reason it was left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.recorder import reader
from canarygate.runtime.tensors import DATATYPES

PARQUET = "_parquet"  # the writer's folder of Parquet copies


class ReplayError(Exception):
    """Input replay cannot work with: the message says what and where (exit code 2)."""


@dataclass
class Served:
    """One served prediction: its inputs, and what the version that served it answered."""

    request_id: str
    time: float
    version: str
    status: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] | None  # None when the served version failed (5xx)

    @property
    def rows(self) -> int:
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1


@dataclass
class Captured:
    """A model's replayable predictions, labels by request id, and what was left out."""

    predictions: list[Served] = field(default_factory=list)
    labels: dict[str, list[float]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    segments: int = 0
    records: int = 0


def dataset_files(root: Path) -> list[Path]:
    """The segments to read under ``root`` (a folder, a segment, or a Parquet file)."""
    if root.is_file():
        return [root]
    jsonl = reader.segments(root)
    present = {p.relative_to(root).with_suffix("") for p in jsonl}
    parquet = [p for p in sorted(root.glob("**/*.parquet"), key=lambda p: p.name)
               if _origin(root, p) not in present]
    return sorted([*jsonl, *parquet], key=lambda p: p.name)


def _origin(root: Path, path: Path) -> Path:
    relative = path.relative_to(root).with_suffix("")
    return Path(*relative.parts[1:]) if relative.parts[:1] == (PARQUET,) else relative


def _records(path: Path, stats: reader.ReadStats) -> Iterator[dict[str, Any]]:
    if path.suffix != ".parquet":
        yield from reader.records(path, stats)
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ReplayError(f"{path} is Parquet, which needs pyarrow: "
                          "pip install 'canarygate[parquet]'") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow's errors share no useful base class
        raise ReplayError(f"{path} is not a readable Parquet file: {exc}") from None
    stats.records += len(rows)
    yield from rows


def read(root: Path, model: str, since: float | None, until: float | None,
         limit: int | None) -> Captured:
    """Model ``model``'s predictions between ``since`` and ``until`` (at most ``limit``), and
    every label of the model (a label may arrive after the window closes)."""
    if not root.exists():
        raise ReplayError(f"{root} does not exist")
    files = dataset_files(root)
    if not files:
        raise ReplayError(f"{root} holds no dataset segments (*.jsonl or *.parquet)")
    out = Captured(segments=len(files))
    stats = reader.ReadStats()
    for path in files:
        for record in _records(path, stats):
            _take(record, model, since, until, limit, out)
    out.records = stats.records
    if stats.torn:
        out.skipped["torn line"] += stats.torn
    return out


def _take(record: dict[str, Any], model: str, since: float | None, until: float | None,
          limit: int | None, out: Captured) -> None:
    if record.get("model") != model:
        out.skipped["another model"] += 1
        return
    if record.get("kind") == "feedback":
        feedback = record.get("feedback") or {}
        label = feedback.get("label")
        if isinstance(label, list) and record.get("request_id"):
            out.labels[str(record["request_id"])] = [float(v) for v in label]
        return
    t = float(record.get("time") or 0.0)
    reason = _unreplayable(record, t, since, until)
    if reason is None and limit is not None and len(out.predictions) >= limit:
        reason = "past --limit"
    if reason is not None:
        out.skipped[reason] += 1
        return
    try:
        inputs = _tensors(record["inputs"])
        outputs = _tensors(record["outputs"]) if record.get("outputs") else None
    except ValueError as exc:
        out.skipped[f"unreadable tensors ({exc})"] += 1
        return
    if not inputs:
        out.skipped["redacted inputs"] += 1
        return
    out.predictions.append(Served(str(record.get("request_id") or ""), t,
                                  str(record.get("version")), int(record.get("status") or 0),
                                  inputs, outputs))


def _unreplayable(record: dict[str, Any], t: float, since: float | None,
                  until: float | None) -> str | None:
    if since is not None and t < since:
        return "before --since"
    if until is not None and t >= until:
        return "after --until"
    status = int(record.get("status") or 0)
    if status < 500 and status != 200:
        return f"status {status} (the request was refused, nothing was served)"
    if not record.get("inputs"):
        return "no inputs recorded"
    if status == 200 and not record.get("outputs"):
        return "no outputs recorded"
    return None


def _tensors(entries: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """V2-style tensors as arrays; a redacted one (hashed or dropped) is left out."""
    out: dict[str, np.ndarray] = {}
    for entry in entries:
        data, datatype = entry.get("data"), entry.get("datatype")
        if data is None or datatype not in DATATYPES or datatype == "BYTES":
            continue
        shape = [int(d) for d in entry.get("shape") or []]
        array = np.asarray(data, dtype=DATATYPES[datatype])
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{entry.get('name')!r} holds {array.size} values for shape "
                             f"{shape}")
        out[str(entry["name"])] = array.reshape(shape)
    return out
