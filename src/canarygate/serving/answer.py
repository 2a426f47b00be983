"""One prediction request as it was served: what the observers are handed, once, at its end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canarygate.router import Routing
from canarygate.runtime.model import ModelVersion
from canarygate.runtime.result import RunResult
from canarygate.runtime.tensors import rows_of


@dataclass(slots=True)
class Answer:
    """Filled in as the request goes: the front end sets who asked and how it ended; the
    serving plane sets what was routed and run. Whatever stage a request failed at, the
    answer holds what was known by then, and no more (a record names no version that the
    response did not name)."""

    request_id: str
    arrived: float  # seconds since the epoch
    started: float  # perf_counter() at arrival
    protocol: str
    model: str = ""  # empty until the request named a served model
    version: ModelVersion | None = None  # the version that answered (or was asked for)
    variant: str = ""  # baseline, candidate, pinned or fallback, once routed
    routing: Routing | None = None  # the table the request was routed by; None when pinned
    key: bytes | None = None  # the sticky key
    feeds: dict[str, np.ndarray] | None = None  # checked inputs
    outputs: dict[str, np.ndarray] | None = None  # every output of the version that answered
    run: RunResult | None = None
    ran: float = 0.0  # perf_counter() when the model's answer was there
    fallback: str | None = None  # why the baseline answered for the candidate
    mirror: bool = False  # the candidate is to run on the same inputs, off the answer's path
    status: int = 200
    error: str | None = None

    @property
    def version_label(self) -> str:
        return self.version.version if self.version is not None else ""

    @property
    def rows(self) -> int:
        return rows_of(self.feeds)

    def failed(self, status: int, message: str) -> None:
        self.status, self.error = status, message

    def served_headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers that say which version answered (or failed: a 500 names the
        version that failed), in which role, and why the baseline answered for the candidate
        when it did. A request refused before any version was chosen names none."""
        if self.version is None:
            return []
        headers = [(b"x-model-version", self.version.version.encode()),
                   (b"x-canarygate-variant", self.variant.encode())]
        if self.fallback is not None:
            headers.append((b"x-canarygate-fallback", self.fallback.encode()))
        return headers
