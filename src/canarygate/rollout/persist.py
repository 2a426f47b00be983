"""Writes rollout state and decision records on a thread of its own, so neither the event loop
nor a request ever waits on disk. ``flush`` waits until everything queued is written."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Any

from canarygate.rollout.state import RolloutState
from canarygate.rollout.store import StateStore

log = logging.getLogger("canarygate.rollout")

RECENT_DECISIONS = 1000


class Persister:
    def __init__(self, store: StateStore, decisions_path: Path) -> None:
        self.store = store
        self.decisions_path = decisions_path
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="canarygate-state", daemon=True)
        self._thread.start()

    def save(self, state: RolloutState) -> None:
        self._queue.put(("state", state))

    def record(self, decision: dict[str, Any]) -> None:
        self.recent.setdefault(decision["model"], deque(maxlen=RECENT_DECISIONS)).append(decision)
        self._queue.put(("decision", decision))

    def decisions(self, model: str) -> list[dict[str, Any]]:
        return list(self.recent.get(model, ()))

    def load_decisions(self) -> None:
        """Fill the recent decisions from the log file (after a restart)."""
        if not self.decisions_path.exists():
            return
        with self.decisions_path.open() as f:
            for line in f:
                try:
                    decision = json.loads(line)
                except ValueError:
                    continue  # a torn last line after a crash
                self.recent.setdefault(decision["model"],
                                       deque(maxlen=RECENT_DECISIONS)).append(decision)

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self.decisions_path.parent.mkdir(parents=True, exist_ok=True)
        with self.decisions_path.open("a") as decisions:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    kind, payload = item
                    if kind == "state":
                        self.store.save(payload)
                    else:
                        decisions.write(json.dumps(payload) + "\n")
                        decisions.flush()
                except Exception:
                    log.exception("could not persist %s", item[0] if item else "item")
                finally:
                    self._queue.task_done()
