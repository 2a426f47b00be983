"""The parts of a running gateway, built once from the config and handed to the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass

from canarygate.config import GatewayConfig
from canarygate.metrics import Metrics
from canarygate.runtime import ModelRegistry
from canarygate.runtime.runner import Runner


@dataclass
class Gateway:
    config: GatewayConfig
    registry: ModelRegistry
    runner: Runner
    metrics: Metrics
    ready: bool = False

    @classmethod
    def build(cls, config: GatewayConfig) -> Gateway:
        registry = ModelRegistry.load(config)  # raises ConfigError before anything starts
        return cls(config, registry, Runner(config.server.inference_threads), Metrics())

    def close(self) -> None:
        self.ready = False
        self.runner.close()
