"""The request path's side of the inference dataset: a bounded queue of records.

A record holds references (the request's arrays included): turning it into JSON is the writer's
job. Appending to a deque and counting is all a request pays. When the queue is full the
configured policy applies, and either way the count shows on /metrics: ``drop`` answers at once
and counts the record as dropped; ``block`` makes the request wait until the writer makes room.
Once the writer has stopped, a record is counted as dropped, and nothing waits any more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from random import random
from typing import Any

import numpy as np

from canarygate.config import DatasetConfig


@dataclass(slots=True)
class Record:
    time: float  # seconds since the epoch, when the request arrived
    request_id: str
    model: str
    version: str
    variant: str  # baseline, candidate, pinned, fallback
    routing: str  # weight, sticky, pinned, fallback (shadow outputs ride along in ``shadow``)
    step: int
    weight: float
    protocol: str
    status: int
    error: str | None
    inputs: dict[str, np.ndarray] | None
    outputs: dict[str, np.ndarray] | None
    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_size: int = 1
    shadow_version: str | None = None
    shadow_outputs: dict[str, np.ndarray] | None = None
    shadow_error: str | None = None


@dataclass(slots=True)
class FeedbackRecord:
    """A label that joined an earlier prediction (same request id)."""

    time: float
    request_id: str
    model: str
    version: str
    variant: str
    label: list[float]
    predicted: list[Any]


class Recorder:
    def __init__(self, config: DatasetConfig) -> None:
        self.config = config
        self.queue: deque[Record | FeedbackRecord] = deque()
        self.limit = config.queue_size
        self.sample_rate = config.sample_rate
        self.block = config.on_full == "block"
        self.captured = 0  # handed to the queue
        self.dropped = 0  # refused: queue full under the drop policy
        self.blocked = 0  # requests that had to wait for room
        self.written = 0  # written by the writer (its thread updates these three)
        self.failed = 0  # could not be serialised or written
        self.errors = 0  # other writer I/O errors: closing, Parquet, retention
        self.closed = False  # the writer has stopped: later records count as dropped
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._room = asyncio.Event()

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or random() < self.sample_rate

    def put(self, record: Record | FeedbackRecord) -> bool:
        """Queue a record without waiting; False when it was dropped."""
        if len(self.queue) >= self.limit or self.closed:
            self.dropped += 1
            return False
        self.queue.append(record)
        self.captured += 1
        return True

    async def wait_for_room(self) -> None:
        """Under the ``block`` policy, wait until the queue has room (at once otherwise)."""
        if (not self.block or len(self.queue) < self.limit or self._room is None
                or self.closed):
            return
        self.blocked += 1
        while len(self.queue) >= self.limit and not self.closed:
            self._room.clear()
            await self._room.wait()

    async def put_or_wait(self, record: Record | FeedbackRecord) -> None:
        """Queue a record, waiting for room under the ``block`` policy."""
        await self.wait_for_room()
        self.put(record)

    def made_room(self) -> None:
        """Called by the writer thread after it drained the queue."""
        if self._loop is not None and self._room is not None and self.block:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self._loop.call_soon_threadsafe(self._room.set)

    def close(self) -> None:
        """Called by the writer thread as it ends: release every waiter."""
        self.closed = True
        self.made_room()

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest record still waiting for the writer."""
        try:
            return max(0.0, now - self.queue[0].time)
        except IndexError:
            return 0.0
