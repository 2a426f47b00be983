"""What a drift evaluation found, as frozen values: read by the gates, ``/metrics`` and the
admin API, serialised to JSON in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canarygate.estimate.cbpe import Estimate

LEVELS = ("window_too_small", "ok", "warn", "alert")


@dataclass(frozen=True, slots=True)
class ColumnScore:
    """One column's live counts scored against a reference (the profile, or the baseline's
    live counts): its distances and p-values in ``scores``, and its ``level``."""

    name: str
    kind: str  # numeric or categorical
    window_size: int
    missing: int
    level: str  # one of LEVELS
    scores: dict[str, float]  # psi, js_distance, ks, wasserstein, p_value, p_adjusted, ...

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "window_size": self.window_size,
                "missing": self.missing, **self.scores, "level": self.level}


def state_of(rows: int, min_window: int, columns: tuple[ColumnScore, ...]) -> str:
    """A window's overall level: too small, else its worst column's."""
    levels = {c.level for c in columns}
    return ("window_too_small" if rows < min_window else
            "alert" if "alert" in levels else "warn" if "warn" in levels else "ok")


@dataclass(frozen=True, slots=True)
class VariantReport:
    """One version in one role against its own reference profile."""

    version: str
    variant: str
    window_rows: int
    min_window: int
    features: tuple[ColumnScore, ...]
    outputs: tuple[ColumnScore, ...]
    estimated_accuracy: Estimate | None = None  # a calibrated classifier's, over the window

    @property
    def alerts(self) -> list[str]:
        """Input columns at the alert level."""
        return [c.name for c in self.features if c.level == "alert"]

    @property
    def state(self) -> str:
        return state_of(self.window_rows, self.min_window, self.features)

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "variant": self.variant,
                "window_rows": self.window_rows, "min_window": self.min_window,
                "features": [c.as_json() for c in self.features],
                "outputs": [c.as_json() for c in self.outputs],
                "alerts": self.alerts, "state": self.state,
                "estimated_accuracy": (self.estimated_accuracy.as_json()
                                       if self.estimated_accuracy is not None else None)}


@dataclass(frozen=True, slots=True)
class OutputComparison:
    """The candidate's outputs against the baseline's, live, over the same window."""

    baseline: str  # versions
    candidate: str
    baseline_rows: int
    candidate_rows: int
    min_window: int
    outputs: tuple[ColumnScore, ...]

    @property
    def alerts(self) -> list[str]:
        return [c.name for c in self.outputs if c.level == "alert"]

    @property
    def state(self) -> str:
        return state_of(min(self.baseline_rows, self.candidate_rows), self.min_window,
                        self.outputs)

    def as_json(self) -> dict[str, Any]:
        return {"baseline": {"version": self.baseline, "window_rows": self.baseline_rows},
                "candidate": {"version": self.candidate, "window_rows": self.candidate_rows},
                "min_window": self.min_window, "outputs": [c.as_json() for c in self.outputs],
                "alerts": self.alerts, "state": self.state}


@dataclass(frozen=True, slots=True)
class DriftReport:
    """A model's last evaluation: every version and variant in its window."""

    model: str
    evaluated_at: float
    variants: tuple[VariantReport, ...]
    dropped_rows: int
    output_comparison: OutputComparison | None

    def variant(self, version: str | None, variant: str) -> VariantReport | None:
        return next((v for v in self.variants
                     if v.version == version and v.variant == variant), None)

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "evaluated_at": self.evaluated_at,
                "variants": [v.as_json() for v in self.variants],
                "dropped_rows": self.dropped_rows,
                "output_comparison": (self.output_comparison.as_json()
                                      if self.output_comparison is not None else None)}
