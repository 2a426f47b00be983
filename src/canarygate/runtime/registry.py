"""The served models: for each name, its loaded versions and which one plays which role."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from canarygate.config import GatewayConfig, ModelConfig
from canarygate.errors import ConfigError, NotFound
from canarygate.router import Routing
from canarygate.runtime.model import ModelVersion
from canarygate.stats import StepWindow


@dataclass
class ServedModel:
    """A model's versions, with what the request path reads: the routing table the rollout
    controller installs, and the statistics window of the current step."""

    config: ModelConfig
    versions: dict[str, ModelVersion]
    routing: Routing | None = None
    window: StepWindow = field(default_factory=StepWindow.fresh)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def baseline(self) -> ModelVersion:
        if self.routing is not None:
            return self.routing.baseline
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
        models: dict[str, ServedModel] = {}
        for mc in config.models:
            versions = {
                name: ModelVersion.load(
                    mc.name,
                    name,
                    resolve_folder(config.models_dir, vc.path,
                                   f"model {mc.name!r} version {name!r}"),
                    intra_op_threads=config.server.intra_op_threads,
                    max_batch_size=mc.max_batch_size or config.server.max_batch_size,
                    allow_non_finite=mc.allow_non_finite,
                    batching=mc.batching,
                )
                for name, vc in mc.versions.items()
            }
            base = versions[mc.baseline]
            for name, version in versions.items():
                if version.inputs != base.inputs or version.outputs != base.outputs:
                    raise ConfigError(
                        f"model {mc.name!r} version {name!r}: its inputs or outputs differ from "
                        f"the baseline's ({mc.baseline!r}); versions of one model must have the "
                        "same signature to share its traffic")
            served = ServedModel(mc, versions)
            served.routing = Routing(baseline=versions[mc.baseline], salt=mc.name.encode())
            models[mc.name] = served
        return cls(models)

    def get(self, name: str) -> ServedModel:
        found = self.models.get(name)
        if found is None:
            raise NotFound(f"unknown model {name!r}; this gateway serves: {self._known}")
        return found


def resolve_folder(models_dir: Path, path: str, where: str) -> Path:
    """A version folder, which must lie inside ``models_dir``."""
    root = models_dir.resolve()
    folder = (root / path).resolve()
    if not folder.is_relative_to(root):
        raise ConfigError(f"{where}: path {path!r} lies outside the models directory {root}")
    if not folder.is_dir():
        raise ConfigError(f"{where}: folder {folder} does not exist")
    return folder
