"""The writer thread: drains the record queue into segment files, off the request path.

Layout: ``<dir>/<model>/<YYYY-MM-DD>/<YYYYmmddTHHMMSS.ffffff>-<pid>-<seq>.jsonl``, so names sort
by time (requests that named no served model go under ``+unknown``). A segment is JSON Lines
while open; it is closed when it passes ``max_segment_bytes``, ``max_segment_seconds`` or
midnight (UTC), and at shutdown. A closed segment may also be written as Parquet, in the same
layout under ``<dir>/_parquet/``, so ``pandas.read_parquet(<dir>/_parquet)`` reads them all.
Retention deletes the oldest closed segments past a total size or an age. A batch is split
across segments, so a segment passes ``max_segment_bytes`` by one line at most.
Each drain ends with a flush, so a killed process loses at most one flush interval of records,
and a torn last line at worst (the reader skips it and counts it).

Two threads drain the queue, one at a time. The writer runs at the background's low priority
(``server.background_nice``), so at moderate load it fills the time the event loop leaves idle
and never delays a request. On a saturated core that time is nil: at nice 19 the writer got 2 %
of the core, about 1,200 records a second against 3,000-6,000 answered, and the queue filled
(a million requests later it was dropping most records). So a second thread wakes every flush
interval and, when the queue is behind (over 1/64 of its limit waiting, or its oldest record
older than ``CATCH_UP_LAG`` flush intervals), drains it whole; the low-priority writer stops at
its next record as soon as the queue is behind. The catch-up thread runs at nice
``CATCH_UP_NICE`` (or the background's, when that is lower): the scheduler lets it have up to a
tenth of a core the loop keeps busy, about what writing every answer takes there, and still
runs the loop first when a request comes. It pauses for the loop as the writer does, except
past 1/8 of the queue's limit waiting (each pause costs it a turn of the scheduler; pausing
throughout, it fell behind by 500 records a second at 3,700 answered). Recording every answer
then costs a saturated gateway that share of the core, which is what recording costs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from queue import SimpleQueue
from typing import IO, Any

import numpy as np
import orjson

from canarygate.background import Pacer, lower_priority
from canarygate.config import DatasetConfig
from canarygate.recorder.queue import FeedbackRecord, Record, Recorder
from canarygate.runtime.tensors import tensor_json

log = logging.getLogger("canarygate.recorder")

BATCH = 4096  # records serialised per write
# Past 1/64 of the queue's limit waiting (1,024 records by default) the writer drains without
# pausing for the event loop; at 1,500 requests a second a drain finds about 300.
HURRY_SHARE = 64
CATCH_UP_LAG = 4  # flush intervals: a writer trailing by more is helped whatever the count
CATCH_UP_NICE = 10  # weight 110 against the loop's 1,024: at most about 10 % of a busy core
CATCH_UP_HURRY = 8  # past 1/8 of the queue's limit waiting, the catch-up thread stops pausing
UNKNOWN = "+unknown"  # no model name starts with "+"; pyarrow skips names starting "_"
PARQUET = "_parquet"
NOTHING: frozenset[str] = frozenset()


@dataclass
class Segment:
    path: Path
    file: IO[bytes]
    opened: float
    date: str
    size: int = 0


class Writer:
    """The thread that owns the segment files. It survives any error: a record that cannot be
    serialised or written counts as failed, any other I/O error (closing, Parquet, retention)
    in ``recorder.errors``, and each is logged; the thread goes on with the next batch."""

    def __init__(self, recorder: Recorder, config: DatasetConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.recorder = recorder
        self.config = config
        self.root = config.dir
        self.clock = clock
        self._drop = frozenset(config.redact.drop)
        self._hash = frozenset(config.redact.hash)
        self._segments: dict[str, Segment] = {}
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canarygate-recorder",
                                         daemon=True)
        # Drains when the low-priority writer falls behind (see the module's docstring).
        self._helper = threading.Thread(target=self._catch_up, name="canarygate-recorder-catch-up",
                                         daemon=True)
        self._draining = threading.Lock()  # one drainer at a time: it owns the segments
        self.caught_up = 0  # drains the helper made
        # Closed segments wait here for their Parquet copy, made on a thread of its own so
        # that writing goes on meanwhile (pyarrow parses outside the GIL).
        self._pending: SimpleQueue[Path | None] = SimpleQueue()
        self._converter = threading.Thread(target=self._convert, name="canarygate-parquet",
                                           daemon=True)
        self._converting: set[Path] = set()
        self._errors = threading.Lock()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self._helper.start()
        if self.config.parquet:
            self._converter.start()

    def stop(self) -> None:
        """Write everything still queued, close every segment, and end the thread."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        lower_priority()
        interval = self.config.flush_interval_seconds
        try:
            while not self._stop.wait(interval):
                with self._draining:
                    self._guarded(partial(self._drain, yielding=True))
            self._helper.join()
            with self._draining:  # the last records, whatever the count
                self._guarded(self._drain)
                for model in list(self._segments):
                    self._guarded(partial(self._close, model))
        finally:
            if self._converter.is_alive():
                self._pending.put(None)
                self._converter.join()
            # Whatever comes later is counted as dropped, and no request waits for room.
            self.recorder.close()

    def _catch_up(self) -> None:
        """At nice ``CATCH_UP_NICE``: drain the queue whenever the writer is behind."""
        lower_priority(CATCH_UP_NICE)
        interval = self.config.flush_interval_seconds
        while not self._stop.wait(interval):
            if self._behind():
                with self._draining:
                    self.caught_up += 1
                    self._guarded(partial(self._drain, catching_up=True))

    def _behind(self) -> bool:
        """More waiting than the low-priority writer keeps up with."""
        return (len(self.recorder.queue) > self._hurry_count()
                or self.recorder.lag_seconds(self.clock())
                > CATCH_UP_LAG * self.config.flush_interval_seconds)

    def _hurry_count(self) -> int:
        return max(1, self.recorder.limit // HURRY_SHARE)

    def _error(self) -> None:
        with self._errors:  # two threads count here
            self.recorder.errors += 1

    def _convert(self) -> None:
        lower_priority()
        while (source := self._pending.get()) is not None:
            target = (self.root / PARQUET / source.relative_to(self.root)).with_suffix(
                ".parquet")
            try:
                to_parquet(source, target)
            except Exception:
                self._error()
                log.exception("could not write %s as Parquet", source)
            self._converting.discard(source)

    def _guarded(self, step: Callable[[], None]) -> None:
        """The last line of defence: each step handles its own errors, so reaching this is a
        bug; the thread still lives on (a dead writer loses records and hangs ``block``)."""
        try:
            step()
        except Exception:
            self._error()
            log.exception("dataset writer step failed; carrying on")

    def _drain(self, yielding: bool = False, catching_up: bool = False) -> None:
        """Serialise and write what is queued (the caller holds ``_draining``). ``yielding``:
        the low-priority writer's drain, which stops at its next record once the queue is
        behind, and leaves the rest to the catch-up thread. ``catching_up``: the catch-up
        thread's, which pauses for the loop unless 1/8 of the queue's limit is waiting."""
        queue = self.recorder.queue
        # Serialising is Python work: let the event loop in, unless the writer is falling
        # behind. On a saturated core the loop always wants the GIL, and a writer that paused
        # throughout fell behind there (the bench's resident memory after 1M requests went
        # from 1.03 to 1.11 times that after 100k); a full queue drops records or holds
        # requests back, both worse than a slower tail.
        # Behind in time as well: a record older than a flush interval is past what a kill
        # may lose. At nice 19 on a machine busy with other work each pause can cost a
        # scheduling round (milliseconds), and a writer pausing throughout trailed by seconds
        # (a SIGKILL then lost 51 of 323 records answered over 0.5 s before it, beside two
        # busy processes).
        behind = self._hurry_count()
        late = self.config.flush_interval_seconds
        full = self.recorder.limit // CATCH_UP_HURRY
        pace = Pacer(hurry=(lambda: len(queue) > full) if catching_up else (
            lambda: len(queue) > behind or self.recorder.lag_seconds(self.clock()) > late))
        stopped = False
        while queue and not stopped:
            batch: dict[str, list[bytes]] = {}
            for _ in range(min(BATCH, len(queue))):
                if yielding and len(queue) > behind:
                    stopped = True  # the catch-up thread takes it from here
                    break
                pace()
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
        """Append ``lines``, moving to a new segment whenever one reaches
        ``max_segment_bytes``: a segment ends at most one line past the limit."""
        limit = self.config.max_segment_bytes
        start = 0
        while start < len(lines):
            try:
                segment = self._segment(model)
                end, size = start, 0
                while end < len(lines) and (end == start or segment.size + size < limit):
                    size += len(lines[end]) + 1
                    end += 1
                data = b"\n".join(lines[start:end]) + b"\n"
                segment.file.write(data)
                segment.file.flush()
                if self.config.fsync:
                    os.fsync(segment.file.fileno())
            except Exception:  # OSError mostly; ValueError on a file closed under us
                self.recorder.failed += len(lines) - start
                log.exception("could not write %d records of %s", len(lines) - start, model)
                self._abandon(model)  # the next batch starts a fresh segment
                return
            segment.size += len(data)
            self.recorder.written += end - start
            start = end
            if segment.size >= limit:
                self._close(model)

    def _segment(self, model: str) -> Segment:
        now = self.clock()
        date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        segment = self._segments.get(model)
        if segment is not None and (segment.date != date or
                                    now - segment.opened >= self.config.max_segment_seconds):
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
        now = self.clock()
        for model, segment in list(self._segments.items()):
            if now - segment.opened >= self.config.max_segment_seconds:
                self._close(model)

    def _abandon(self, model: str) -> None:
        """Forget a segment a write failed on (a torn last line is the reader's to skip)."""
        segment = self._segments.pop(model, None)
        if segment is None:
            return
        try:
            segment.file.close()
            if segment.size == 0:
                segment.path.unlink(missing_ok=True)
        except OSError:
            self._error()
            log.exception("could not close %s", segment.path)

    def _close(self, model: str) -> None:
        segment = self._segments.pop(model)
        try:
            segment.file.close()
        except OSError:
            self._error()
            log.exception("could not close %s", segment.path)
        if self.config.parquet and segment.size:
            self._converting.add(segment.path)  # kept from retention until converted
            self._pending.put(segment.path)
        self._retain()

    def _retain(self) -> None:
        """Delete the oldest closed segments past the total size or the age (by name, which
        sorts by time). Files may vanish meanwhile (another hand, another process): skipped."""
        keep_bytes, keep_seconds = self.config.retention_bytes, self.config.retention_seconds
        if keep_bytes is None and keep_seconds is None:
            return
        open_paths = {s.path for s in self._segments.values()} | set(self._converting)
        closed: list[tuple[str, Path, int, float]] = []
        try:
            files = [*self.root.glob("*/*/*.jsonl"), *self.root.glob(f"{PARQUET}/*/*/*.parquet")]
        except OSError:
            self._error()
            log.exception("could not list the dataset under %s", self.root)
            return
        for path in files:
            if path in open_paths:
                continue
            try:
                st = path.stat()
            except OSError:
                continue  # gone since the listing
            closed.append((path.name, path, st.st_size, st.st_mtime))
        closed.sort()
        total = sum(size for _, _, size, _ in closed)
        now = time.time()  # file times are wall-clock times, whatever clock names segments
        for _, path, size, mtime in closed:
            too_old = keep_seconds is not None and now - mtime > keep_seconds
            too_big = keep_bytes is not None and total > keep_bytes
            if not (too_old or too_big):
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError:
                self._error()
                log.exception("could not delete %s", path)
                continue
            total -= size

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
        drop, hashed = (self._drop, self._hash) if redact else (NOTHING, NOTHING)
        out: list[dict[str, Any]] = []
        for name, array in tensors.items():
            if name in drop:
                continue
            if name in hashed:
                entry = tensor_json(name, array, with_data=False)
                entry["sha256"] = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            else:
                entry = tensor_json(name, array)
            out.append(entry)
        return out

def to_parquet(source: Path, target: Path) -> None:
    """One JSON Lines segment as a Parquet file with the dataset's schema.

    pyarrow's own JSON reader is about four times faster than parsing in Python and leaves the
    GIL to the gateway; text (BYTES) tensors or a torn line send a segment the Python way.
    """
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    from canarygate.recorder.reader import records, schema, to_table

    try:
        table = pa_json.read_json(source, parse_options=pa_json.ParseOptions(
            explicit_schema=schema(), unexpected_field_behavior="ignore"))
    except pa.ArrowInvalid:
        table = to_table(list(records(source)))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(target)
