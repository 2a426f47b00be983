"""Versions registered at run time through the admin API.

A registered version is loaded from a folder under the models directory, checked against the
baseline's signature, written to the state store *before* it serves (a rollout may name it the
moment it serves, and that rollout's state must find it again after a restart), and loaded
again at start, before rollout state is restored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from canarygate.config import GatewayConfig
from canarygate.errors import ConfigError
from canarygate.rollout.store import StateStore
from canarygate.runtime import ModelRegistry, ModelVersion, ServedModel
from canarygate.runtime.registry import resolve_folder

if TYPE_CHECKING:
    from canarygate.drift import DriftMonitor

log = logging.getLogger("canarygate.rollout")


class VersionCatalog:
    def __init__(self, config: GatewayConfig, registry: ModelRegistry, store: StateStore,
                 drift: DriftMonitor | None = None) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.drift = drift

    def load(self, served: ServedModel, version: str, path: str) -> ModelVersion:
        """The version in ``path``, loaded as the model's other versions are; blocking (run it
        off the event loop). Raises ConfigError naming the problem; serves nothing."""
        where = f"model {served.name!r} version {version!r}"
        try:
            folder = resolve_folder(self.config.models_dir, path, where)
        except (ValueError, OSError) as exc:  # a NUL byte, a name longer than the OS takes
            raise ConfigError(f"{where}: path {path!r} cannot name a folder ({exc})") from None
        server = self.config.server
        loaded = ModelVersion.load(
            served.name, version, folder,
            intra_op_threads=server.intra_op_threads,
            max_batch_size=served.config.max_batch_size or server.max_batch_size,
            allow_non_finite=served.config.allow_non_finite,
            batching=served.config.batching)
        base = served.baseline
        if loaded.inputs != base.inputs or loaded.outputs != base.outputs:
            raise ConfigError(f"{where}: its inputs or outputs differ from the baseline's "
                              f"({base.version!r}); a candidate must have the same signature")
        return loaded

    def persist(self, served: ServedModel, loaded: ModelVersion, path: str) -> None:
        """Write a loaded version to the store (blocking), before ``install`` serves it. If
        this fails (OSError, or ConfigError for a damaged file), do not serve the version:
        after a restart it would be gone while a rollout names it."""
        self.store.save_version(served.name, loaded.version, path)
        if self.drift is not None:
            self.drift.add_profile(served.name, loaded.version, loaded.folder)

    @staticmethod
    def install(served: ServedModel, loaded: ModelVersion) -> None:
        """Serve a registered version (on the event loop: the request path reads the dict)."""
        served.versions = {**served.versions, loaded.version: loaded}

    def reload(self) -> dict[str, dict[str, str]]:
        """At start: load every registered version again. Returns, per model and version, why a
        version could not be loaded; rollouts naming such a version must not serve it."""
        problems: dict[str, dict[str, str]] = {}
        for name, versions in self.store.load_versions().items():
            served = self.registry.models.get(name)
            if served is None:
                log.warning("versions registered for model %r are not loaded: the config no "
                            "longer names that model", name)
                continue
            for version, path in versions.items():
                if version in served.versions:
                    log.warning("model %r version %r is both in the config and registered "
                                "(from %r); the config's folder serves", name, version, path)
                    continue
                try:
                    loaded = self.load(served, version, path)
                except ConfigError as exc:
                    log.error("registered version not loaded: %s", exc)
                    problems.setdefault(name, {})[version] = str(exc)
                    continue
                if self.drift is not None:
                    self.drift.add_profile(name, version, loaded.folder)
                self.install(served, loaded)
        return problems
