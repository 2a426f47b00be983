"""The analysis loop: what the request path buffered, taken off it every second and turned into
drift reports and detector states, and those findings read back as the judge's evidence.

Small, frequent passes on a thread: numpy, scipy and pure-Python statistics kept off the event
loop. On a core the event loop shares, a burst of background work is a burst of lost serving
capacity, and near saturation the queue it leaves takes seconds to drain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any

from canarygate.background import lower_priority, release_memory
from canarygate.config import DriftConfig
from canarygate.drift import DriftMonitor
from canarygate.drift.sequential import SequentialMonitor
from canarygate.rollout.quality import Evidence
from canarygate.rollout.state import RolloutState
from canarygate.runtime import ModelRegistry
from canarygate.stats.live import LiveStats

log = logging.getLogger("canarygate.drift")

BIN_SECONDS = 1.0  # how often the analysis thread takes what the request path buffered
TRIM_EVERY = 10  # analysis passes between two returns of freed memory to the OS


class Analysis:
    def __init__(self, config: DriftConfig, registry: ModelRegistry, live: LiveStats,
                 drift: DriftMonitor | None, detectors: SequentialMonitor | None) -> None:
        self.config = config
        self.registry = registry
        self.live = live
        self.drift = drift
        self.detectors = detectors
        self.passes = 0
        # Its own thread, at the background's priority (the loop's default executor also
        # serves admin requests, which should not wait behind a low priority).
        self._thread = ThreadPoolExecutor(1, "canarygate-analysis", initializer=lower_priority)

    async def run(self) -> None:
        """Feed the detectors and bin drift every second; evaluate drift every interval."""
        interval = self.config.interval_seconds
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while True:
            await asyncio.sleep(min(BIN_SECONDS, interval))
            evaluate = loop.time() >= due
            if evaluate:
                due += interval
            try:
                await loop.run_in_executor(self._thread, self.step, evaluate)
            except Exception:
                log.exception("drift evaluation failed")

    def close(self) -> None:
        """No more passes (one under way finishes on its thread)."""
        self._thread.shutdown(wait=False, cancel_futures=True)

    def step(self, evaluate: bool) -> None:
        """One pass (on the analysis thread): ``evaluate`` closes a drift interval."""
        self.passes += 1
        if not self.passes % TRIM_EVERY:
            release_memory()
        if self.detectors is not None:
            self.detectors.tick()
        if self.drift is not None:
            if evaluate:
                self.drift.tick()
            else:
                self.drift.bin()

    # -- read by the controller (an EvidenceSource) -------------------------------------------

    def evidence(self, name: str, state: RolloutState) -> Evidence:
        """What the analysis found about a rollout's candidate, for the quality gates."""
        served = self.registry.get(name)
        comparison = inputs = baseline_report = None
        if self.drift is not None:
            report = self.drift.reports.get(name)
            if report is not None:
                comparison = report.output_comparison
                inputs = report.variant(state.candidate, "candidate")
                baseline_report = report.variant(state.baseline, "baseline")
        # Recent rises in each variant's error rate: the last three intervals of the step.
        since = max(state.step_started_at or 0.0,
                    time.time() - 3 * state.schedule.interval_seconds)
        baseline = served.versions.get(state.baseline)
        return Evidence(classifier=baseline.classifier if baseline is not None else True,
                        output_comparison=comparison, candidate_inputs=inputs,
                        input_drift_action=self.config.input_drift_action,
                        error_changes=self._rises(name, state.candidate, since),
                        baseline_error_changes=self._rises(name, state.baseline, since),
                        candidate_accuracy=inputs.estimated_accuracy if inputs else None,
                        baseline_accuracy=(baseline_report.estimated_accuracy
                                           if baseline_report else None))

    def _rises(self, name: str, version: str | None, since: float) -> list[dict[str, Any]]:
        stream = (self.detectors.stream(name, version, "errors")
                  if self.detectors is not None and version else None)
        if stream is None:
            return []
        return [e for e in stream.since(since) if e["direction"] == "up"]

    def traffic(self, name: str) -> list[dict[str, Any]]:
        """The last minute of each version and variant: what a judgement saw served."""
        keep = ("version", "variant", "requests", "qps", "error_rate", "mean_batch_rows")
        return [{**{k: v[k] for k in keep}, "p50_ms": v["total_ms"]["p50"],
                 "p99_ms": v["total_ms"]["p99"]}
                for v in self.live.summary(name, perf_counter(), kinds=("total",))["variants"]]
