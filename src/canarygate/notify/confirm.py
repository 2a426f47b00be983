"""External gates, as Flagger's confirm-rollout and confirm-promotion webhooks: a rollout may
name URLs that must all answer 2xx before it serves its candidate, or before it promotes.

The controller's tick only reads the last answer (``answer``) and never waits on the network:
asking happens on a thread of its own, at most once per ``every`` seconds per model and gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass(frozen=True)
class Answer:
    confirmed: bool
    detail: str  # which URL said what, for the decision log
    at: float


class Confirmations:
    def __init__(self, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self.answers: dict[tuple[str, str], Answer] = {}
        self._asking: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def answer(self, model: str, gate: str, urls: list[str], event: dict[str, Any],
               every: float) -> Answer | None:
        """The last answer for ``model``'s ``gate`` (None before the first), asking again on a
        thread when the last is older than ``every`` seconds and none is under way."""
        key = (model, gate)
        last = self.answers.get(key)
        with self._lock:
            due = last is None or self.clock() - last.at >= every
            if due and key not in self._asking:
                self._asking.add(key)
                threading.Thread(target=self._ask, args=(key, urls, event), daemon=True,
                                 name=f"{gate} {model}").start()
        return last

    def forget(self, model: str) -> None:
        """A new rollout asks afresh."""
        for key in [k for k in self.answers if k[0] == model]:
            del self.answers[key]

    def _ask(self, key: tuple[str, str], urls: list[str], event: dict[str, Any]) -> None:
        body = orjson.dumps(event)
        try:
            for url in urls:
                try:
                    r = httpx.post(url, content=body, timeout=self.timeout,
                                   headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    self.answers[key] = Answer(False, f"{url}: {type(exc).__name__}",
                                               self.clock())
                    return
                if not r.is_success:
                    self.answers[key] = Answer(False, f"{url} answered {r.status_code}: "
                                                      f"{r.text[:200]}", self.clock())
                    return
            self.answers[key] = Answer(True, ", ".join(urls) + " answered 2xx", self.clock())
        finally:
            with self._lock:
                self._asking.discard(key)
