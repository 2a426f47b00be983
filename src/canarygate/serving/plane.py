"""``predict``: route a request to a version, run it, fall back to the baseline when the
candidate fails, and decide whether the candidate shadows it. No transport in it: a front end
hands over decoded tensors and gets back what was served."""

from __future__ import annotations

from random import random
from time import perf_counter

import numpy as np

from canarygate.errors import ModelFailure
from canarygate.router import Routing, RoutingTable, to_candidate
from canarygate.runtime import ModelRegistry, ModelVersion, ServedModel, Tensor
from canarygate.runtime.runner import Runner, RunResult
from canarygate.serving.answer import Answer


class ServingPlane:
    def __init__(self, registry: ModelRegistry, table: RoutingTable, runner: Runner) -> None:
        self.registry = registry
        self.table = table
        self.runner = runner

    def model(self, name: str) -> ServedModel:
        """A served model by name (NotFound, naming the served ones, for any other)."""
        return self.registry.get(name)

    def baseline(self, name: str) -> ModelVersion:
        """The version that serves a model's routed requests outside a rollout."""
        return self.table.get(name).baseline

    async def predict(self, answer: Answer, model: ServedModel, tensors: list[Tensor], *,
                      key: bytes | None = None, version: str | None = None) -> Answer:
        """Serve one request into ``answer``: ``version`` pins it (no routing, not canary
        traffic); otherwise the model's routing table picks the variant, ``key`` keeping a
        caller on one version. Raises BadRequest for inputs that do not fit the model's
        signature, before any version is chosen (so a bad request is no version's), and
        ModelFailure when the chosen version fails."""
        answer.model = model.name
        if version is not None:
            served = model.version(version)
            feeds = answer.feeds = served.feeds(tensors)
            answer.version, answer.variant = served, "pinned"
            run = answer.run = await self.runner.run(served, feeds, served.output_names)
        else:
            routing = self.table.get(model.name)
            # Every version of a model has the baseline's signature (checked at load).
            feeds = answer.feeds = routing.baseline.feeds(tensors)
            served, run = await self._routed(answer, routing, key, feeds)
        answer.ran = perf_counter()
        answer.outputs = dict(zip(served.output_names, run.outputs, strict=True))
        return answer

    async def _routed(self, answer: Answer, routing: Routing, key: bytes | None,
                      feeds: dict[str, np.ndarray]) -> tuple[ModelVersion, RunResult]:
        answer.routing, answer.key = routing, key
        candidate = routing.candidate
        if candidate is not None and to_candidate(routing, key, random()):
            answer.version, answer.variant = candidate, "candidate"
            try:
                answer.run = await self._run_candidate(candidate, feeds, routing)
                return candidate, answer.run
            except (ModelFailure, TimeoutError) as exc:
                # The observer counts it against the candidate, whatever the baseline does.
                answer.fallback = ("candidate-timeout" if isinstance(exc, TimeoutError)
                                   else "candidate-error")
        answer.version = routing.baseline
        answer.variant = "fallback" if answer.fallback else "baseline"
        answer.run = await self.runner.run(routing.baseline, feeds,
                                           routing.baseline.output_names)
        answer.mirror = bool(not answer.fallback and routing.shadow_share and candidate
                             and random() < routing.shadow_share)
        return routing.baseline, answer.run

    async def _run_candidate(self, candidate: ModelVersion, feeds: dict[str, np.ndarray],
                             routing: Routing) -> RunResult:
        run = await self.runner.run(candidate, feeds,
                                    candidate.output_names, routing.candidate_timeout)
        if not run.all_finite():
            raise ModelFailure(f"candidate {candidate.version!r} answered NaN or infinity")
        return run
