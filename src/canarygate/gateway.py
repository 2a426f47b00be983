"""The parts of a running gateway, built once from the config and handed to the HTTP layer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from canarygate.config import GatewayConfig
from canarygate.metrics import Metrics
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.persist import Persister
from canarygate.rollout.store import FileStateStore
from canarygate.runtime import ModelRegistry
from canarygate.runtime.runner import Runner


@dataclass
class Gateway:
    config: GatewayConfig
    registry: ModelRegistry
    runner: Runner
    metrics: Metrics
    rollouts: RolloutManager | None = None
    ready: bool = False
    _controllers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, config: GatewayConfig) -> Gateway:
        registry = ModelRegistry.load(config)  # raises ConfigError before anything starts
        metrics = Metrics()
        gateway = cls(config, registry, Runner(config.server.inference_threads), metrics)
        store = FileStateStore(config.state_dir / "rollouts.json")
        persister = Persister(store, config.state_dir / "decisions.jsonl")
        persister.load_decisions()
        gateway.rollouts = RolloutManager(registry, persister, metrics)
        gateway.rollouts.restore(store.load())
        return gateway

    def start(self) -> None:
        """Start one controller task per model (inside the running event loop)."""
        assert self.rollouts is not None
        loop = asyncio.get_running_loop()
        self._controllers = [loop.create_task(self.rollouts.run(name))
                             for name in self.registry.models]
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for task in self._controllers:
            task.cancel()
        await asyncio.gather(*self._controllers, return_exceptions=True)
        if self.rollouts is not None:
            self.rollouts.persister.flush()
            self.rollouts.persister.close()
        self.runner.close()
