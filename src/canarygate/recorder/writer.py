"""The writer thread: drains the record queue into segment files, off the request path.

Layout: ``<dir>/<model>/<YYYY-MM-DD>/<YYYYmmddTHHMMSS.ffffff>-<pid>-<seq>.jsonl``, so names sort
by time (requests that named no served model go under ``+unknown``). A segment is JSON Lines
while open; it is closed when it passes ``max_segment_bytes``, ``max_segment_seconds`` or
midnight (UTC), and at shutdown. A closed segment may also be written as Parquet, in the same
layout under ``<dir>/_parquet/``, so ``pandas.read_parquet(<dir>/_parquet)`` reads them all.
Retention deletes the oldest closed segments past a total size or an age.
Each drain ends with a flush, so a killed process loses at most one flush interval of records,
and a torn last line at worst (the reader skips it and counts it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from canarygate.config import DatasetConfig
from canarygate.recorder.queue import FeedbackRecord, Record, Recorder
from canarygate.runtime.tensors import datatype_of

log = logging.getLogger("canarygate.recorder")

BATCH = 4096  # records serialised per write
UNKNOWN = "+unknown"  # no model name starts with "+"; pyarrow skips names starting "_"
PARQUET = "_parquet"


@dataclass
class Segment:
    path: Path
    file: IO[bytes]
    opened: float
    date: str
    size: int = 0


class Writer:
    def __init__(self, recorder: Recorder, config: DatasetConfig) -> None:
        self.recorder = recorder
        self.config = config
        self.root = config.dir
        self._drop = frozenset(config.redact.drop)
        self._hash = frozenset(config.redact.hash)
        self._segments: dict[str, Segment] = {}
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canarygate-recorder",
                                         daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        """Write everything still queued, close every segment, and end the thread."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.config.flush_interval_seconds
        while not self._stop.wait(interval):
            self._drain()
        self._drain()
        for model in list(self._segments):
            self._close(model)

    def _drain(self) -> None:
        queue = self.recorder.queue
        while queue:
            batch: dict[str, list[bytes]] = {}
            for _ in range(min(BATCH, len(queue))):
                record = queue.popleft()
                try:
                    line = orjson.dumps(self._json(record), option=orjson.OPT_SERIALIZE_NUMPY)
                except Exception:
                    self.recorder.failed += 1
                    log.exception("could not serialise the record of request %s",
                                  record.request_id)
                    continue
                batch.setdefault(record.model or UNKNOWN, []).append(line)
            self.recorder.made_room()
            for model, lines in batch.items():
                self._write(model, lines)
        self._rotate_by_age()

    def _write(self, model: str, lines: list[bytes]) -> None:
        try:
            segment = self._segment(model)
            data = b"\n".join(lines) + b"\n"
            segment.file.write(data)
            segment.file.flush()
            if self.config.fsync:
                os.fsync(segment.file.fileno())
            segment.size += len(data)
            self.recorder.written += len(lines)
        except OSError:
            self.recorder.failed += len(lines)
            log.exception("could not write %d records of %s", len(lines), model)
            return
        if segment.size >= self.config.max_segment_bytes:
            self._close(model)

    def _segment(self, model: str) -> Segment:
        now = time.time()
        date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        segment = self._segments.get(model)
        if segment is not None and segment.date != date:
            self._close(model)
            segment = None
        if segment is None:
            folder = self.root / model / date
            folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S.%f")
            path = folder / f"{stamp}-{os.getpid()}-{self._seq:06d}.jsonl"
            segment = Segment(path, path.open("ab"), now, date)
            self._segments[model] = segment
        return segment

    def _rotate_by_age(self) -> None:
        now = time.time()
        for model, segment in list(self._segments.items()):
            if now - segment.opened >= self.config.max_segment_seconds:
                self._close(model)

    def _close(self, model: str) -> None:
        segment = self._segments.pop(model)
        segment.file.close()
        if self.config.parquet and segment.size:
            target = (self.root / PARQUET / segment.path.relative_to(self.root)).with_suffix(
                ".parquet")
            try:
                to_parquet(segment.path, target)
            except Exception:
                log.exception("could not write %s as Parquet", segment.path)
        self._retain()

    def _retain(self) -> None:
        keep_bytes, keep_seconds = self.config.retention_bytes, self.config.retention_seconds
        if keep_bytes is None and keep_seconds is None:
            return
        open_paths = {s.path for s in self._segments.values()}
        files = [*self.root.glob("*/*/*.jsonl"), *self.root.glob(f"{PARQUET}/*/*/*.parquet")]
        closed = sorted((p for p in files if p not in open_paths), key=lambda p: p.name)
        total = sum(p.stat().st_size for p in closed)
        now = time.time()
        for path in closed:
            too_old = keep_seconds is not None and now - path.stat().st_mtime > keep_seconds
            too_big = keep_bytes is not None and total > keep_bytes
            if not (too_old or too_big):
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

    def _json(self, r: Record | FeedbackRecord) -> dict[str, Any]:
        if isinstance(r, FeedbackRecord):
            return {"kind": "feedback", "time": r.time, "request_id": r.request_id,
                    "model": r.model, "version": r.version, "variant": r.variant,
                    "feedback": {"label": r.label, "predicted": r.predicted}}
        return {
            "kind": "prediction",
            "time": r.time, "request_id": r.request_id, "model": r.model,
            "version": r.version, "variant": r.variant, "routing": r.routing, "step": r.step,
            "weight": r.weight, "protocol": r.protocol, "status": r.status, "error": r.error,
            "inputs": self._tensors(r.inputs, redact=True),
            "outputs": self._tensors(r.outputs),
            "latency_ms": {"queue": r.queue_ms, "inference": r.inference_ms,
                           "total": r.total_ms, "batch_size": r.batch_size},
            "shadow": None if r.shadow_version is None else {
                "version": r.shadow_version, "error": r.shadow_error,
                "outputs": self._tensors(r.shadow_outputs)},
        }

    def _tensors(self, tensors: dict[str, np.ndarray] | None,
                 redact: bool = False) -> list[dict[str, Any]] | None:
        """Tensors as the V2 protocol writes them: a list of name, datatype, shape, data."""
        if tensors is None:
            return None
        out: list[dict[str, Any]] = []
        for name, array in tensors.items():
            if redact and name in self._drop:
                continue
            entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array),
                                     "shape": list(array.shape)}
            if redact and name in self._hash:
                entry["sha256"] = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            elif array.dtype == np.object_:
                entry["data"] = [x.decode(errors="replace") if isinstance(x, bytes) else str(x)
                                 for x in array.ravel()]
            else:
                entry["data"] = np.ascontiguousarray(array).ravel()
            out.append(entry)
        return out


def to_parquet(source: Path, target: Path) -> None:
    """One JSON Lines segment as a Parquet file with the dataset's schema."""
    import pyarrow.parquet as pq

    from canarygate.recorder.reader import records, to_table

    table = to_table(list(records(source)))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(target)
