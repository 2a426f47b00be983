"""A regressor's errors, candidate against baseline, as a bettor's wealth: the counters behind
the accuracy gate's two-sample test on mean squared errors (docs/statistics.md §1.9).

Each labelled row of a prediction routed at random at weight w is the candidate's with
probability w. Its score g = min((error / scale)^2, 1), with ``scale`` frozen for the step, and
X = (Z - w) (g - m), Z = 1 for a candidate row, m a centre fixed before the row (the running
mean of the scores before it). Whatever the errors, E[X | past] = w (1 - w) (the candidate's
mean score - the baseline's), so X has mean at most 0 when the candidate's clipped squared
errors are on average no larger. Betting a fraction u of the most that row could lose,
1 + u X / L with L = max(w (1 - m), (1 - w) m), stays positive, and its product over rows is a
test supermartingale; the counters keep log of that product for each fraction of ``BETS``
(the gate averages them, a mixture fixed in advance). Off the request path: the feedback
path adds rows here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Fractions of the largest safe bet: 8 points, log-spaced from 0.01 to 0.8, equal weights.
BETS = tuple(0.01 * 80 ** (i / 7) for i in range(8))
_BETS = np.asarray(BETS)[:, None]
CENTRE_PRIOR, CENTRE_ROWS = 0.1, 10  # the centre before any row: 0.1 as if from 10 rows
SCALE_PER_TAU = 2.0  # the clip scale: twice the baseline's 90th percentile absolute error


def _zeros() -> list[float]:
    return [0.0] * len(BETS)


@dataclass
class ErrorBets:
    """One step window's bets: rows of predictions made since ``started`` (so routed at this
    window's weight) once the step's ``scale`` is known."""

    started: float = 0.0
    scale: float = math.inf
    candidate_rows: int = 0
    baseline_rows: int = 0
    candidate_sum: float = 0.0  # scores summed (the arms' mean scores, for people)
    baseline_sum: float = 0.0
    wealth: list[float] = field(default_factory=_zeros)  # log wealth per fraction of BETS

    def centre(self) -> float:
        rows = self.candidate_rows + self.baseline_rows
        return (CENTRE_PRIOR * CENTRE_ROWS + self.candidate_sum + self.baseline_sum) / (
            CENTRE_ROWS + rows)

    def add(self, candidate: Sequence[float], baseline: Sequence[float], weight: float,
            made: float) -> None:
        """Rows (absolute errors) of predictions routed at ``weight`` (0..1) and made at
        ``made``, of the candidate and of the baseline, all bet with the same centre (the
        product over rows with one centre does not depend on their order, so a batch of
        either arm is bet as if in arrival order). Rows of older predictions, or before the
        scale is known, are not bets."""
        if made < self.started or not math.isfinite(self.scale) or not 0 < weight < 1 or (
                not len(candidate) and not len(baseline)):
            return
        gc, gb = self.scores(candidate), self.scores(baseline)
        m = self.centre()
        most = max(weight * (1.0 - m), (1.0 - weight) * m)
        x = np.concatenate(((1.0 - weight) / most * (gc - m), -weight / most * (gb - m)))
        self.candidate_rows += gc.size
        self.baseline_rows += gb.size
        self.candidate_sum += float(gc.sum())
        self.baseline_sum += float(gb.sum())
        self.bet(x)

    def scores(self, errors: Sequence[float]) -> np.ndarray:
        scaled = np.asarray(errors, dtype=float) / self.scale
        return np.minimum(scaled * scaled, 1.0)

    def bet(self, x: np.ndarray) -> None:
        """Each fraction u of ``BETS`` stakes u x per row, x at least -1."""
        steps = np.log1p(_BETS * x).sum(axis=1)
        self.wealth = (steps + self.wealth).tolist()

    def add_pairs(self, candidate: Sequence[float], baseline: Sequence[float]) -> None:
        """Paired rows (a replay: both versions answered each): X = (g_c - g_b) / 2 per row,
        at least -1/2, with mean at most 0 when the candidate's mean score is at most the
        baseline's (and, under exchangeable pairs, a fair sign whatever the scale: set it
        from both arms' errors together)."""
        if not math.isfinite(self.scale) or not len(candidate):
            return
        gc, gb = self.scores(candidate), self.scores(baseline)
        self.candidate_rows += gc.size
        self.baseline_rows += gb.size
        self.candidate_sum += float(gc.sum())
        self.baseline_sum += float(gb.sum())
        self.bet(gc - gb)  # X / (1/2)

    def merge(self, other: ErrorBets) -> None:
        """Another worker's rows of the same window (each product's factors were bet on what
        that worker had seen before them, which is in the past: the sum stays one product)."""
        self.candidate_rows += other.candidate_rows
        self.baseline_rows += other.baseline_rows
        self.candidate_sum += other.candidate_sum
        self.baseline_sum += other.baseline_sum
        self.wealth = [a + b for a, b in zip(self.wealth, other.wealth, strict=True)]

    def to_json(self) -> dict[str, object]:
        return {"started": self.started,
                "scale": self.scale if math.isfinite(self.scale) else None,
                "rows": [self.candidate_rows, self.baseline_rows],
                "sums": [self.candidate_sum, self.baseline_sum], "wealth": list(self.wealth)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ErrorBets:
        rows, sums, wealth = data["rows"], data["sums"], data["wealth"]
        if not (isinstance(rows, list) and isinstance(sums, list) and isinstance(wealth, list)
                and len(wealth) == len(BETS)):
            raise TypeError("error bets must have rows, sums and one wealth per bet")
        scale = data.get("scale")
        return cls(float(data["started"]),  # type: ignore[arg-type]
                   float(scale) if isinstance(scale, (int, float)) else math.inf,
                   int(rows[0]), int(rows[1]), float(sums[0]), float(sums[1]),
                   [float(w) for w in wealth])
