"""Where rollout state lives. The interface is two calls, so a Redis store can follow
(compare-and-set on the revision, as ``save`` does here for one process)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from canarygate.errors import Conflict
from canarygate.rollout.state import RolloutState


class StateStore(Protocol):
    def load(self) -> dict[str, RolloutState]: ...

    def save(self, state: RolloutState) -> None:
        """Store ``state``; refuse (Conflict) if the stored revision is not the one before."""


class FileStateStore:
    """All models' states in one JSON file, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[str, RolloutState]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {name: RolloutState.from_json(data) for name, data in raw.items()}

    def save(self, state: RolloutState) -> None:
        with self._lock:
            states = self.load()
            stored = states.get(state.model)
            if stored is not None and stored.revision >= state.revision:
                raise Conflict(f"rollout of {state.model!r} changed meanwhile (revision "
                               f"{stored.revision}, not older than {state.revision})")
            states[state.model] = state
            self._write({name: s.to_json() for name, s in states.items()})

    def _write(self, data: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".rollouts-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
