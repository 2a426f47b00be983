"""Which version answers a routed request: a pure function of the routing table and the request.

The controller publishes one immutable ``Routing`` per model through ``RoutingTable.set``; the
request path reads it with ``get`` and never sees the controller's own state. Sticky requests
hash their key into 10,000 buckets; the candidate serves the buckets below weight x 100, so
raising the weight keeps every key that was on the candidate there, and a weight of 0 sends
every key to the baseline. Requests without a key draw at random.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from canarygate.errors import NotFound
from canarygate.runtime.model import ModelVersion
from canarygate.stats.step import StepStats

BUCKETS = 10_000
DEFAULT_CANDIDATE_TIMEOUT = 1.0  # seconds; a rollout's schedule sets its own


@dataclass(frozen=True, slots=True)
class Routing:
    """What the request path reads of a model's rollout: rebuilt whenever the state changes."""

    baseline: ModelVersion
    candidate: ModelVersion | None = None
    weight: float = 0.0  # percent
    step: int = -1  # the rollout step (for the inference dataset); -1 outside the ramp
    shadow_share: float = 0.0  # fraction of baseline requests mirrored to the candidate
    salt: bytes = b""  # per rollout, so one key is not the canary of every rollout
    candidate_timeout: float = DEFAULT_CANDIDATE_TIMEOUT  # seconds a candidate run may take
    # The current step's counters: a request adds to the step it was routed in, even when the
    # controller has moved on to the next one by the time it is answered.
    step_stats: StepStats = field(default_factory=StepStats.fresh)
    window: int = 0  # names the step's counters for every worker (RolloutState.window)

    @property
    def cutoff(self) -> float:
        return self.weight * (BUCKETS / 100.0)


class RoutingTable:
    """The one narrow interface between the controller and the request path: set and get an
    immutable ``Routing`` per model."""

    def __init__(self) -> None:
        self._routes: dict[str, Routing] = {}

    def set(self, model: str, routing: Routing) -> None:
        self._routes[model] = routing

    def get(self, model: str) -> Routing:
        found = self._routes.get(model)
        if found is None:
            raise NotFound(f"model {model!r} has no routing")
        return found

    def __contains__(self, model: str) -> bool:
        return model in self._routes


def bucket(salt: bytes, key: bytes) -> int:
    digest = hashlib.blake2b(key, digest_size=8, key=salt[:64]).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def to_candidate(routing: Routing, key: bytes | None, draw: float) -> bool:
    """True when the candidate serves; ``draw`` is uniform in [0, 1) for unkeyed requests."""
    if routing.candidate is None or routing.weight <= 0.0:
        return False
    if key is not None:
        return bucket(routing.salt, key) < routing.cutoff
    return draw * 100.0 < routing.weight
