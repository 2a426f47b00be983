"""The parts of a running gateway, built once from the config and handed to the HTTP layer."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from canarygate.background import release_memory
from canarygate.config import GatewayConfig
from canarygate.drift import DriftMonitor
from canarygate.drift.sequential import SequentialMonitor
from canarygate.feedback import FeedbackBook, Prediction
from canarygate.metrics import Metrics
from canarygate.recorder import Recorder
from canarygate.recorder.writer import Writer
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.persist import Persister
from canarygate.rollout.quality import Evidence
from canarygate.rollout.state import RolloutState
from canarygate.rollout.store import FileStateStore
from canarygate.rollout.versions import VersionCatalog
from canarygate.runtime import ModelRegistry
from canarygate.runtime.runner import Runner
from canarygate.stats.live import LiveStats

BIN_SECONDS = 1.0  # how often the analysis thread takes what the request path buffered
TRIM_EVERY = 10  # analysis passes between two returns of freed memory to the OS


@dataclass
class Gateway:
    config: GatewayConfig
    registry: ModelRegistry
    runner: Runner
    metrics: Metrics
    rollouts: RolloutManager | None = None
    catalog: VersionCatalog | None = None  # versions registered at run time
    recorder: Recorder | None = None
    writer: Writer | None = None
    feedback: FeedbackBook = field(default_factory=FeedbackBook)
    drift: DriftMonitor | None = None
    sequential: SequentialMonitor | None = None
    live: LiveStats = field(default_factory=LiveStats)
    ready: bool = False
    background: set[asyncio.Task[None]] = field(default_factory=set)  # shadow runs
    _controllers: list[asyncio.Task[None]] = field(default_factory=list)
    _passes: int = 0  # of the analysis loop

    @classmethod
    def build(cls, config: GatewayConfig) -> Gateway:
        registry = ModelRegistry.load(config)  # raises ConfigError before anything starts
        metrics = Metrics()
        gateway = cls(config, registry, Runner(config.server.inference_threads), metrics)
        gateway.feedback = FeedbackBook(config.feedback.max_entries,
                                        config.feedback.ttl_seconds)
        gateway.feedback.reserve()
        metrics.watch_feedback(gateway.feedback)
        metrics.watch_runner(gateway.runner)
        metrics.watch_latency(gateway.live)
        if config.drift.enabled:
            gateway.drift = DriftMonitor(config.drift)
            for served in registry.models.values():
                for version in served.versions.values():
                    gateway.drift.add_profile(served.name, version.version, version.folder)
            metrics.watch_drift(gateway.drift)
        if config.detectors.enabled:
            gateway.sequential = SequentialMonitor(config.detectors)
            metrics.watch_detectors(gateway.sequential)
        store = FileStateStore(config.state_dir / "rollouts.json")
        persister = Persister(store, config.state_dir / "decisions.jsonl")
        persister.load_decisions()
        gateway.rollouts = RolloutManager(registry, persister, metrics)
        gateway.rollouts.evidence = gateway.evidence
        gateway.rollouts.traffic = gateway.traffic
        gateway.catalog = VersionCatalog(config, registry, store, gateway.drift)
        gateway.rollouts.restore(store.load(), gateway.catalog)
        if config.dataset.enabled:
            gateway.recorder = Recorder(config.dataset)
            gateway.writer = Writer(gateway.recorder, config.dataset)
            metrics.watch_recorder(gateway.recorder)
        return gateway

    def evidence(self, name: str, state: RolloutState) -> Evidence:
        """What the analysis loop found about a rollout's candidate, for the quality gates."""
        served = self.registry.get(name)
        comparison = inputs = None
        if self.drift is not None:
            comparison = self.drift.output_comparison(name)
            for entry in self.drift.results.get(name, {}).get("variants", []):
                if entry["version"] == state.candidate and entry["variant"] == "candidate":
                    inputs = entry
        changes: list[dict[str, Any]] = []
        stream = (self.sequential.stream(name, state.candidate, "errors")
                  if self.sequential is not None and state.candidate else None)
        if stream is not None:
            # Recent rises in the candidate's error rate: the last three intervals of its step.
            since = max(state.step_started_at or 0.0,
                        time.time() - 3 * state.schedule.interval_seconds)
            changes = [e for e in stream.since(since) if e["direction"] == "up"]
        baseline = served.versions.get(state.baseline)
        return Evidence(classifier=baseline.classifier if baseline is not None else True,
                        output_comparison=comparison, candidate_inputs=inputs,
                        input_drift_action=self.config.drift.input_drift_action,
                        error_changes=changes)

    def traffic(self, name: str) -> list[dict[str, Any]]:
        """The last minute of each version and variant: what a judgement saw served."""
        keep = ("version", "variant", "requests", "qps", "error_rate", "mean_batch_rows")
        return [{**{k: v[k] for k in keep}, "p50_ms": v["total_ms"]["p50"],
                 "p99_ms": v["total_ms"]["p99"]}
                for v in self.live.summary(name, perf_counter())["variants"]]

    def labelled(self, prediction: Prediction, errors: list[float]) -> None:
        """Feedback joined a prediction: its rows' errors (0/1 wrong, or absolute) go to the
        version's detectors and, when the prediction was routed in the current rollout to
        a version that still plays that part, to the step's statistics."""
        if self.sequential is not None:
            self.sequential.observe_errors(prediction.model, prediction.version,
                                           prediction.classifier, errors)
        served = self.registry.models.get(prediction.model)
        routing = served.routing if served is not None else None
        if served is None or routing is None or routing.candidate is None:
            return
        if prediction.variant == "candidate" and prediction.version == routing.candidate.version:
            served.window.candidate.label(prediction.classifier, errors)
        elif prediction.variant == "baseline" and prediction.version == routing.baseline.version:
            served.window.baseline.label(prediction.classifier, errors)

    def start(self) -> None:
        """Start one controller task per model (inside the running event loop)."""
        assert self.rollouts is not None
        loop = asyncio.get_running_loop()
        if self.recorder is not None and self.writer is not None:
            self.recorder.bind(loop)
            self.writer.start()
        self._controllers = [loop.create_task(self.rollouts.run(name))
                             for name in self.registry.models]
        self._controllers.append(loop.create_task(self._analysis_loop()))
        self.ready = True

    async def _analysis_loop(self) -> None:
        """Feed the detectors and bin drift every second, judge drift every interval, on a
        thread: numpy, scipy and pure-Python statistics, kept off the event loop. Small,
        frequent passes: on a core the event loop shares, a burst of background work is a
        burst of lost serving capacity, and near saturation the queue it leaves takes
        seconds to drain."""
        interval = self.config.drift.interval_seconds
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while True:
            await asyncio.sleep(min(BIN_SECONDS, interval))
            judge = loop.time() >= due
            if judge:
                due += interval
            try:
                await asyncio.to_thread(self._analyse, judge)
            except Exception:
                logging.getLogger("canarygate.drift").exception("drift evaluation failed")

    def _analyse(self, judge: bool) -> None:
        self._passes += 1
        if not self._passes % TRIM_EVERY:
            release_memory()
        if self.sequential is not None:
            self.sequential.tick()
        if self.drift is not None:
            if judge:
                self.drift.tick()
            else:
                self.drift.bin()

    async def stop(self) -> None:
        """After the server stopped taking requests: finish shadow runs, write every record."""
        self.ready = False
        for task in self._controllers:
            task.cancel()
        await asyncio.gather(*self._controllers, return_exceptions=True)
        await asyncio.gather(*list(self.background), return_exceptions=True)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop)
        if self.rollouts is not None:
            self.rollouts.persister.flush()
            self.rollouts.persister.close()
        self.runner.close()
