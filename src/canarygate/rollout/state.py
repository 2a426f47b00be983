"""A rollout's state: what the controller and release engineers decided (config is what was
asked). Frozen; every change is a new record with the next revision, written atomically."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canarygate.config import RolloutConfig


class Phase(StrEnum):
    IDLE = "idle"  # no candidate: the baseline serves everything
    SHADOW = "shadow"  # the candidate answers mirrored requests only, compared, never served
    PROGRESSING = "progressing"  # the candidate serves its step's weight; the ramp may advance
    PAUSED = "paused"  # the candidate serves at its weight; only a person moves it on
    AWAITING_PROMOTION = "awaiting_promotion"  # every step held; a person promotes
    PROMOTED = "promoted"  # the candidate became the baseline
    ROLLED_BACK = "rolled_back"  # the candidate serves nothing; the baseline everything


ACTIVE = frozenset({Phase.SHADOW, Phase.PROGRESSING, Phase.PAUSED, Phase.AWAITING_PROMOTION})
JUDGED = frozenset({Phase.SHADOW, Phase.PROGRESSING})


@dataclass(frozen=True)
class RolloutState:
    model: str
    baseline: str
    candidate: str | None = None
    phase: Phase = Phase.IDLE
    step: int = -1  # index into schedule.steps; -1 before the ramp (idle, shadow)
    weight: float = 0.0  # percent of routed requests the candidate serves
    schedule: RolloutConfig = field(default_factory=RolloutConfig)
    revision: int = 0
    started_at: float | None = None
    step_started_at: float | None = None
    resume_phase: Phase | None = None  # where a paused rollout resumes
    carried_log_e: dict[str, float] = field(default_factory=dict)
    """Per e-process: the log e-values of the completed segments, summed (a product of
    e-values stays valid across steps, so evidence carries over); shown to people."""
    restarts_log_e: dict[str, list[float]] = field(default_factory=dict)
    """Per e-process, per step begun: the log product of the completed segments since that
    step began. The gates judge the average of these products (rollout/ledger.py)."""
    pending_log_e: dict[str, float] = field(default_factory=dict)
    """The current segment's log e-values at the last tick, folded in after a restart."""
    min_requests: int | None = None  # the step's candidate requests, sized from the baseline
    tau_seconds: float | None = None  # the step's frozen "slow" threshold (baseline p95)
    tail_tau_seconds: float | None = None  # ... and its slow-tail threshold (baseline p99.9)
    error_tau: float | None = None  # a regressor's frozen "large error" (baseline p90)
    awaiting_confirmation: bool = False  # the schedule's confirm_rollout URLs have not said 2xx
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)  # the decisive gate's figures
    window: int = 0
    """The revision whose change started the current step's counters: every worker counts
    the step under this number, so their counts can be merged."""
    stamp: str = ""
    """Which write this revision is: a new token each ``evolve``. Two workers that each made
    revision N from N-1 made different states; the stamp tells them apart."""
    parent: str = ""
    """The stamp of the revision this one was made from: a shared store takes a new revision
    only on top of that very state (compare-and-set on the lineage, not on the number)."""

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def salt(self) -> bytes:
        """The sticky buckets' salt: per rollout, so one cohort of keys is not the canary of
        every rollout of the model (a cohort that errs more would fail each of them)."""
        return f"{self.model}@{self.started_at!r}".encode()

    def evolve(self, **changes: Any) -> RolloutState:
        return dataclasses.replace(self, revision=self.revision + 1, parent=self.stamp,
                                   stamp=secrets.token_hex(6), **changes)

    def checkpoint(self, **changes: Any) -> RolloutState:
        """The same revision with figures that do not change what it means (the segment's
        evidence so far): stored over itself, so it never races a person's next revision."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        data["resume_phase"] = self.resume_phase.value if self.resume_phase else None
        data["schedule"] = self.schedule.model_dump()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        data = dict(data)
        data["phase"] = Phase(data["phase"])
        data["resume_phase"] = Phase(data["resume_phase"]) if data.get("resume_phase") else None
        data["schedule"] = RolloutConfig.model_validate(data["schedule"])
        return cls(**data)
