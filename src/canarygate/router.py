"""Which version answers a routed request: a pure function of the routing table and the request.

Sticky requests hash their key into 10,000 buckets; the candidate serves the buckets below
weight x 100, so raising the weight keeps every key that was on the candidate there, and a weight
of 0 sends every key to the baseline. Requests without a key draw at random.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime imports the router; the router only names the type
    from canarygate.runtime.model import ModelVersion

BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Routing:
    """What the request path reads: rebuilt by the controller whenever the state changes."""

    baseline: ModelVersion
    candidate: ModelVersion | None = None
    weight: float = 0.0  # percent
    step: int = -1  # the rollout step (for the inference dataset); -1 outside the ramp
    shadow_share: float = 0.0  # fraction of baseline requests mirrored to the candidate
    salt: bytes = b""  # per model, so one key is not the canary of every model at once

    @property
    def cutoff(self) -> float:
        return self.weight * (BUCKETS / 100.0)


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
