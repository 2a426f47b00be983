"""The served models: for each name, its loaded versions (which one plays which role is the
routing table's business, not the registry's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from canarygate.config import GatewayConfig, ModelConfig
from canarygate.errors import ConfigError, NotFound
from canarygate.runtime.files import FolderRules
from canarygate.runtime.model import ModelVersion


@dataclass
class ServedModel:
    config: ModelConfig
    versions: dict[str, ModelVersion]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def signature(self) -> ModelVersion:
        """The version every other must match: the config's baseline (always loaded)."""
        return self.versions[self.config.baseline]

    def version(self, version: str) -> ModelVersion:
        found = self.versions.get(version)
        if found is None:
            raise NotFound(
                f"model {self.name!r} has no version {version!r}; it has: "
                + ", ".join(self.versions)
            )
        return found


class ModelRegistry:
    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models
        self._known = ", ".join(models)

    @classmethod
    def load(cls, config: GatewayConfig) -> ModelRegistry:
        """Every version the config names (ConfigError, naming the version, for one that
        cannot be served)."""
        models: dict[str, ServedModel] = {}
        for mc in config.models:
            versions: dict[str, ModelVersion] = {}
            for name in (mc.baseline, *(v for v in mc.versions if v != mc.baseline)):
                versions[name] = load_version(config, mc, name, mc.versions[name].path,
                                              versions.get(mc.baseline))
            models[mc.name] = ServedModel(mc, {v: versions[v] for v in mc.versions})
        return cls(models)

    def get(self, name: str) -> ServedModel:
        found = self.models.get(name)
        if found is None:
            raise NotFound(f"unknown model {name!r}; this gateway serves: {self._known}")
        return found


def load_version(config: GatewayConfig, model: ModelConfig, version: str, path: str,
                 baseline: ModelVersion | None) -> ModelVersion:
    """The version in ``path`` (a folder under ``models_dir``), loaded with its model's
    settings and checked against ``baseline``'s signature: versions of one model share its
    traffic, so they take and give the same tensors. Blocking; ConfigError names the problem.
    The one way a version is loaded, at start and through the admin API."""
    where = f"model {model.name!r} version {version!r}"
    folder = resolve_folder(config.models_dir, path, where)
    loaded = ModelVersion.load(
        model.name, version, folder, rules=FolderRules.of(config),
        intra_op_threads=config.server.intra_op_threads,
        max_batch_size=model.max_batch_size or config.server.max_batch_size,
        allow_non_finite=model.allow_non_finite,
        batching=model.batching)
    if baseline is not None and (loaded.inputs != baseline.inputs
                                 or loaded.outputs != baseline.outputs):
        raise ConfigError(
            f"{where}: its inputs or outputs differ from the baseline's ({baseline.version!r}); "
            "versions of one model must have the same signature to share its traffic")
    return loaded


def resolve_folder(models_dir: Path, path: str, where: str) -> Path:
    """A version folder, which must lie inside ``models_dir``."""
    root = models_dir.resolve()
    try:
        folder = (root / path).resolve()
        exists = folder.is_dir()
    except (ValueError, OSError) as exc:  # a NUL byte, a name longer than the OS takes
        raise ConfigError(f"{where}: path {path!r} cannot name a folder ({exc})") from None
    if not folder.is_relative_to(root):
        raise ConfigError(f"{where}: path {path!r} lies outside the models directory {root}")
    if not exists:
        raise ConfigError(f"{where}: folder {folder} does not exist")
    return folder
