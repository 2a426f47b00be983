"""Writes rollout state and decision records on a thread of its own, so neither the event loop
nor a request ever waits on disk. ``flush`` waits until everything queued is written.

The decision log is opened before the thread starts (a log that cannot be written is a
``ConfigError`` at start, naming the file), and nothing the thread does can end it: a write that
fails is logged and the next one is tried. ``flush`` and ``close`` wait a bounded time, so a
stuck disk cannot hang shutdown either.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, Protocol

from canarygate.errors import ConfigError
from canarygate.rollout.state import RolloutState
from canarygate.rollout.store import StateStore

log = logging.getLogger("canarygate.rollout")

RECENT_DECISIONS = 1000
MAX_LOG_BYTES = 64 * 1024 * 1024  # the decision log rotates past this: decisions.jsonl.1 keeps
# the one before, so the log takes at most twice this on disk
SHUTDOWN_SECONDS = 10.0


class StateWriter(Protocol):
    """Where the controller's and people's decisions go: the file persister below for one
    process, the Redis cluster link for several."""

    def commit(self, state: RolloutState | None, decision: dict[str, Any] | None,
               fenced: bool = False) -> Future[bool] | None:
        """Write a new state and the decision that made it (either may be None); ``fenced``:
        a controller's write, refused once its lease has passed to another worker. A shared
        store returns a future saying whether the write was taken; one process's, None (its
        writes are never refused)."""

    def decisions(self, model: str) -> list[dict[str, Any]]:
        """The recent decisions of a model, oldest first."""

    def writable(self) -> bool:
        """Whether a person's action can be written now (else it is refused, 503)."""

    def flush(self, timeout: float = ...) -> bool: ...

    def close(self, timeout: float = ...) -> None: ...


class Persister:
    def __init__(self, store: StateStore, decisions_path: Path,
                 max_log_bytes: int = MAX_LOG_BYTES) -> None:
        self.store = store
        self.max_log_bytes = max_log_bytes
        self.decisions_path = decisions_path
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        try:
            decisions_path.parent.mkdir(parents=True, exist_ok=True)
            self._log: IO[str] = decisions_path.open("a")
        except OSError as exc:
            raise ConfigError(f"cannot write the decision log {decisions_path}: "
                              f"{exc.strerror or exc} (state_dir must be a writable folder)"
                              ) from None
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="canarygate-state", daemon=True)
        self._thread.start()

    def save(self, state: RolloutState) -> None:
        self._put(("state", state))

    def record(self, decision: dict[str, Any]) -> None:
        self.recent.setdefault(decision["model"], deque(maxlen=RECENT_DECISIONS)).append(decision)
        self._put(("decision", decision))

    def commit(self, state: RolloutState | None, decision: dict[str, Any] | None,
               fenced: bool = False) -> None:
        """One process holds no lease and nobody else writes: nothing is ever refused."""
        if state is not None:
            self.save(state)
        if decision is not None:
            self.record(decision)

    def writable(self) -> bool:
        return True

    def decisions(self, model: str) -> list[dict[str, Any]]:
        return list(self.recent.get(model, ()))

    def load_decisions(self) -> None:
        """Fill the recent decisions from the log file (after a restart)."""
        try:
            with self.decisions_path.open() as f:
                for line in f:
                    try:
                        decision = json.loads(line)
                    except ValueError:
                        continue  # a torn last line after a crash
                    if isinstance(decision, dict) and isinstance(decision.get("model"), str):
                        self.recent.setdefault(decision["model"],
                                               deque(maxlen=RECENT_DECISIONS)).append(decision)
        except OSError as exc:
            raise ConfigError(f"cannot read the decision log {self.decisions_path}: "
                              f"{exc.strerror or exc}") from None

    def flush(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        """Wait until everything queued is written; False if that took longer than ``timeout``."""
        with self._idle:
            done = self._idle.wait_for(lambda: self._pending == 0, timeout)
        if not done:
            log.error("rollout state: %d write(s) still pending after %.0f s; giving up on "
                      "them (the decision log %s may miss its last records)",
                      self._pending, timeout, self.decisions_path)
        return done

    def close(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("rollout state: the writer thread did not stop within %.0f s", timeout)

    def _rotate(self) -> None:
        """The log so far becomes ``<name>.1`` (replacing the one before) and a new one starts:
        the log is bounded on disk however often the controller decides."""
        self._log.close()
        self.decisions_path.replace(self.decisions_path.with_name(
            self.decisions_path.name + ".1"))
        self._log = self.decisions_path.open("a")

    def _put(self, item: tuple[str, Any]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._log.close()
                return
            kind, payload = item
            try:
                if kind == "state":
                    self.store.save(payload)
                else:
                    self._log.write(json.dumps(payload) + "\n")
                    self._log.flush()
                    if self._log.tell() > self.max_log_bytes:
                        self._rotate()
            except Exception:
                log.exception("could not persist a rollout %s to %s", kind,
                              self.decisions_path.parent)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
