"""Versions registered at run time through the admin API.

A registered version is loaded from a folder under the models directory, checked against the
baseline's signature, written to the state store *before* it serves (a rollout may name it the
moment it serves, and that rollout's state must find it again after a restart), and loaded
again at start, before rollout state is restored.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from canarygate.config import NAME_PATTERN, NAME_RULE, GatewayConfig, shorten
from canarygate.errors import ConfigError
from canarygate.runtime.model import ModelVersion
from canarygate.runtime.registry import ModelRegistry, ServedModel, load_version

if TYPE_CHECKING:
    from canarygate.drift import DriftMonitor
    from canarygate.rollout.store import StateStore

log = logging.getLogger("canarygate.runtime")


class VersionCatalog:
    def __init__(self, config: GatewayConfig, registry: ModelRegistry, store: StateStore,
                 drift: DriftMonitor | None = None) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.drift = drift

    def load(self, served: ServedModel, version: str, path: str) -> ModelVersion:
        """The version in ``path``, loaded as the model's other versions are; blocking (run it
        off the event loop). Raises ConfigError naming the problem; serves nothing.

        The name is checked again here although the admin API checked it before storing it:
        names read back from the state store (a file, or Redis that other workers write) go
        into answers' headers unchecked, so one with a line break would inject a header."""
        if not re.fullmatch(NAME_PATTERN, version):
            raise ConfigError(f"model {served.name!r}: the stored version name "
                              f"{shorten(version)} is not {NAME_RULE}")
        return load_version(self.config, served.config, version, path, served.signature)

    def read_profile(self, served: ServedModel, loaded: ModelVersion) -> None:
        """Read a loaded version's reference profile and calibration for drift (blocking);
        ConfigError names a file that cannot be used. Serves nothing."""
        if self.drift is not None:
            self.drift.add_profile(served.name, loaded.version, loaded.folder, loaded.rules)

    def persist(self, served: ServedModel, loaded: ModelVersion, path: str) -> None:
        """Write a loaded version to the store (blocking), before ``install`` serves it. If
        this fails (OSError, or ConfigError for a damaged file), do not serve the version:
        after a restart it would be gone while a rollout names it."""
        self.store.save_version(served.name, loaded.version, path)

    def adopt(self, served: ServedModel, loaded: ModelVersion) -> None:
        """Serve a version another worker registered (already in the store; its profile
        read with ``read_profile``)."""
        self.install(served, loaded)

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
                    self.read_profile(served, loaded)
                except ConfigError as exc:
                    log.error("registered version not loaded: %s", exc)
                    problems.setdefault(name, {})[version] = str(exc)
                    continue
                self.install(served, loaded)
        return problems
