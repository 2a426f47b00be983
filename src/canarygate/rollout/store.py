"""Where rollout state lives, with the versions registered at run time (their rollouts name
them, so they must survive a restart as the state does). The interface is four calls, so a
Redis store can follow (compare-and-set on the revision, as ``save`` does here for one process).

A file that cannot be read or a folder that cannot be written is a ``ConfigError`` at start,
naming the file: carrying on would forget every rollout, rollbacks included.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from canarygate.errors import ConfigError, Conflict
from canarygate.rollout.state import RolloutState


class StateStore(Protocol):
    def load(self) -> dict[str, RolloutState]: ...

    def save(self, state: RolloutState) -> None:
        """Store ``state``; refuse (Conflict) if the stored revision is not older (unless it
        is the same write, checkpointed again: the same revision and stamp)."""

    def load_versions(self) -> dict[str, dict[str, str]]:
        """Versions registered at run time: model -> version -> path under the models dir."""

    def save_version(self, model: str, version: str, path: str) -> None: ...


class FileStateStore:
    """All models' states in one JSON file and the registered versions in a second one
    (``versions.json`` beside it), each replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.versions_path = path.with_name("versions.json")
        self._lock = threading.Lock()
        _probe(path.parent)

    def load(self) -> dict[str, RolloutState]:
        raw = _read(self.path)
        try:
            return {name: RolloutState.from_json(data) for name, data in raw.items()}
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"rollout state file {self.path} holds an invalid state "
                              f"({problem}); {_ADVICE}") from None

    def save(self, state: RolloutState) -> None:
        with self._lock:
            states = self.load()
            stored = states.get(state.model)
            if stored is not None and (stored.revision, stored.stamp) != (
                    state.revision, state.stamp) and stored.revision >= state.revision:
                raise Conflict(f"rollout of {state.model!r} changed meanwhile (revision "
                               f"{stored.revision}, not older than {state.revision})")
            states[state.model] = state
            _write(self.path, {name: s.to_json() for name, s in states.items()})

    def load_versions(self) -> dict[str, dict[str, str]]:
        raw = _read(self.versions_path)
        try:
            return {model: {version: str(entry["path"]) for version, entry in versions.items()}
                    for model, versions in raw.items()}
        except (AttributeError, KeyError, TypeError) as exc:
            raise ConfigError(f"registered versions file {self.versions_path} is malformed "
                              f"({type(exc).__name__}: {exc}); {_ADVICE}") from None

    def save_version(self, model: str, version: str, path: str) -> None:
        with self._lock:
            raw = _read(self.versions_path)
            raw.setdefault(model, {})[version] = {"path": path}
            _write(self.versions_path, raw)


_ADVICE = ("repair it or move it away (the gateway then forgets the rollouts it holds, "
           "rollbacks included)")


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); {_ADVICE}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(raw).__name__}; "
                          f"{_ADVICE}")
    return raw


def _write(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _probe(folder: Path) -> None:
    """Fail at start, not at the first rollback, when the state folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"the state folder {folder} (state_dir) cannot be written: "
                          f"{exc.strerror or exc}") from None
