"""Gates: pure functions over a step's statistics, each returning a verdict with its figures.

The comparative gates (errors, slow requests) use an anytime-valid e-process, so looking at
them every interval for the whole rollout keeps the false-rollback rate below alpha
(research/drift-and-canary.md §4.5 and §6.4). Conditional on the number of events (errors, or
requests slower than the baseline's p95), each event comes from the candidate with probability
rho0, the candidate's share of the requests, when both arms are equally good. Against the
one-sided alternative rho > rho0 with a Beta(1, 1) prior truncated to (rho0, 1], the mixture
likelihood ratio of k candidate events among n is

    E = [B(1+k, 1+n-k) / B(1, 1)] * [S(1+k, 1+n-k; rho0) / S(1, 1; rho0)]
        / [rho0^k (1-rho0)^(n-k)],

with S the Beta upper tail. E is a nonnegative martingale under the null, so by Ville's
inequality P(sup E >= 1/alpha) <= alpha; products over steps stay valid.

The shadow phase's agreement gate uses the same mixture on the pairs of answers: k
disagreements among n pairs, null rate 1 - min_agreement (see ``agreement_gate``). Each
anytime-valid gate gets its own share of the schedule's alpha (``alpha_shares``), so the
chance of any false rollback over the whole rollout stays below alpha (union bound).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import Any

from scipy import special, stats

from canarygate.config import RolloutConfig
from canarygate.stats import StepWindow

MIN_INTERVAL_REQUESTS = 20  # below this an interval says nothing (NO_DATA)
MIN_GATE_REQUESTS = 20  # candidate requests a step needs before its gates speak
SRM_P_VALUE = 1e-4
MIN_SRM_REQUESTS = 200
MIN_TAU_REQUESTS = 50  # baseline requests needed to freeze the slow threshold
MIN_SANITY_REQUESTS = 50
SLO_STEP_FAILURES = 5  # failed SLO intervals in one step that roll back, in a row or not
Z95 = NormalDist().inv_cdf(0.975)


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"  # evidence is building: hold, do not advance
    FAIL = "fail"  # roll back
    PAUSE = "pause"  # integrity problem: a person is needed
    NO_DATA = "no_data"  # neither pass nor fail: hold
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: Verdict
    statistic: float | None = None
    threshold: float | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def log_e_value(k: int, n: int, rho0: float) -> float:
    """log E for k candidate events out of n, null share rho0 (see the module docstring)."""
    if n == 0:
        return 0.0
    a, b = 1.0 + k, 1.0 + n - k
    log_prior_tail = math.log1p(-rho0)  # S(1, 1; rho0) = 1 - rho0
    log_post = float(special.betaln(a, b)) + log_beta_tail(rho0, a, b)
    log_null = k * math.log(rho0) + (n - k) * math.log1p(-rho0)
    return log_post - log_prior_tail - log_null


def log_beta_tail(x: float, a: float, b: float) -> float:
    """log P(X > x) for X ~ Beta(a, b), accurate where the tail is far below 1e-300.

    ``scipy.special.betaincc`` (the complemented incomplete beta function, computed directly,
    so without cancellation; some µs where ``stats.beta.logsf`` takes half a millisecond)
    underflows to 0 there (a candidate far better than the baseline), and a floored value
    would be carried into later steps as false evidence. The tail equals I_{1-x}(b, a); where
    it is tiny, 1 - x lies below that Beta's mean and the continued fraction of the incomplete
    beta function converges (Numerical Recipes §6.4, in log form).
    """
    tail = float(special.betaincc(a, b, x))
    if tail > 1e-260:
        return math.log(tail)
    return _log_incomplete_beta_cf(1.0 - x, b, a)


def _log_incomplete_beta_cf(x: float, a: float, b: float) -> float:
    """log I_x(a, b) by Lentz's continued fraction; valid for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return (a * math.log(x) + b * math.log1p(-x) - math.log(a)
            - float(special.betaln(a, b)) + math.log(h))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95 % by default) for a proportion: the p with
    |p - k/n| <= z sqrt(p (1 - p) / n) (Wilson 1927)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


def comparative_gate(
    gate: str, cand_events: int, cand_n: int, base_events: int, base_n: int,
    carried: float, alpha: float, tolerance: float = 1.0,
) -> tuple[GateResult, float]:
    """Returns the verdict and this step's log e-value (to carry when the step completes).

    With ``tolerance`` r > 1 the null is "the candidate's event rate is at most r times the
    baseline's": at its edge an event comes from the candidate with probability
    r rho / (r rho + 1 - rho), and the same one-sided mixture against more than that is
    valid for the whole null (a smaller candidate rate only makes candidate events rarer).
    With enough traffic any difference becomes significant, and a difference of a tenth of a
    millisecond in who is slower than the baseline's p95 is not a reason to roll back.
    """
    counts: dict[str, Any] = {"candidate_events": cand_events, "candidate_requests": cand_n,
              "baseline_events": base_events, "baseline_requests": base_n}
    if tolerance != 1.0:
        counts["tolerance"] = tolerance
    threshold = math.log(1 / alpha)
    if base_n == 0:
        return GateResult(gate, Verdict.NOT_APPLICABLE, counts=counts,
                          detail="no baseline traffic to compare with"), 0.0
    if cand_n < MIN_GATE_REQUESTS:
        return GateResult(gate, Verdict.NO_DATA, carried, threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} candidate requests"), 0.0
    share = cand_n / (cand_n + base_n)
    rho0 = tolerance * share / (tolerance * share + 1.0 - share)
    step = log_e_value(cand_events, cand_events + base_events, rho0)
    total = carried + step
    counts["candidate_share"] = round(share, 6)
    if total >= threshold:
        verdict, detail = Verdict.FAIL, "the candidate is worse (anytime-valid test)"
    elif total >= threshold / 2:
        verdict, detail = Verdict.MARGINAL, "evidence against the candidate is building"
    else:
        verdict, detail = Verdict.PASS, ""
    return GateResult(gate, verdict, total, threshold, counts, detail), step


def alpha_shares(schedule: RolloutConfig) -> dict[str, float]:
    """Each anytime-valid gate's share of the rollout's alpha (Bonferroni: the shares sum to
    alpha, so a candidate no worse than the baseline is rolled back by any of them with a
    chance of at most alpha). A new anytime-valid gate takes its share here."""
    gates = ["errors", "latency"]
    if schedule.shadow_percent > 0:
        gates.append("agreement")
    if schedule.accuracy_gate:
        gates.append("accuracy")
    return dict.fromkeys(gates, schedule.alpha / len(gates))


@dataclass
class IntervalMemory:
    """What the judge remembers between ticks of one step (not persisted: ticks are cheap)."""

    last: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    slo_streak: int = 0  # failed SLO intervals in a row
    slo_failures: int = 0  # failed SLO intervals in this step
    quiet_verdicts: tuple[tuple[str, str], ...] | None = None  # of the last logged quiet hold
    quiet_ticks: int = 0  # quiet holds not logged since then


def judge_step(
    schedule: RolloutConfig,
    window: StepWindow,
    *,
    weight: float,
    shadow: bool,
    tau_seconds: float | None,
    carried: dict[str, float],
    elapsed: float,
    memory: IntervalMemory,
) -> tuple[list[GateResult], dict[str, float]]:
    """Every gate's verdict on the current step, and the step's log e-values per gate."""
    base, cand = window.baseline, window.candidate
    alphas = alpha_shares(schedule)
    results: list[GateResult] = []
    step_log_e: dict[str, float] = {}

    # Interval figures: differences of the counters since the last tick.
    now_c, now_b = cand.counters(), base.counters()
    prev_c = memory.last.get("candidate", (0, 0, 0))
    memory.last["candidate"], memory.last["baseline"] = now_c, now_b
    interval_requests = now_c[0] - prev_c[0]
    interval_errors = now_c[1] - prev_c[1]
    interval_over = now_c[2] - prev_c[2]

    # Hard health: most of the candidate's requests failing in one interval.
    health = {"interval_requests": interval_requests, "interval_errors": interval_errors}
    if interval_requests < MIN_INTERVAL_REQUESTS:
        results.append(GateResult("health", Verdict.NO_DATA, counts=health))
    else:
        share = interval_errors / interval_requests
        results.append(GateResult("health", Verdict.FAIL if share > 0.5 else Verdict.PASS,
                                  share, 0.5, health,
                                  "most candidate requests failed" if share > 0.5 else ""))

    # Operational errors, candidate against baseline.
    gate, log_e = comparative_gate("errors", cand.errors, cand.requests, base.errors,
                                   base.requests, carried.get("errors", 0.0),
                                   alphas["errors"])
    results.append(gate)
    step_log_e["errors"] = log_e

    # Latency: requests slower than the baseline's p95, frozen for the step, timed from
    # arrival to having the answer (ArmStats.record says why not the model run alone).
    cand_ok, base_ok = cand.requests - cand.errors, base.requests - base.errors
    if tau_seconds is None:
        results.append(GateResult("latency", Verdict.NO_DATA,
                                  detail="the baseline's p95 is not known yet"))
    else:
        gate, log_e = comparative_gate(
            "latency", cand.latency.count_above(tau_seconds), cand_ok,
            base.latency.count_above(tau_seconds), base_ok,
            carried.get("latency", 0.0), alphas["latency"], schedule.latency_tolerance)
        gate.counts["tau_ms"] = round(tau_seconds * 1000, 4)
        results.append(gate)
        step_log_e["latency"] = log_e

    # Optional absolute SLO: surely more than 1 % over it, several intervals in a row (or
    # too many in one step). A failed interval holds the ramp until the streak clears.
    if schedule.latency_slo_ms is not None:
        counts = {"interval_requests": interval_requests, "interval_over_slo": interval_over,
                  "consecutive_failures": memory.slo_streak,
                  "step_failures": memory.slo_failures}
        if interval_requests < MIN_INTERVAL_REQUESTS:
            results.append(GateResult("latency_slo", Verdict.NO_DATA, counts=counts))
        else:
            low, _ = wilson(interval_over, interval_requests)
            over = low > 0.01
            memory.slo_streak = memory.slo_streak + 1 if over else 0
            memory.slo_failures += over
            counts.update(consecutive_failures=memory.slo_streak,
                          step_failures=memory.slo_failures)
            failed = (memory.slo_streak >= schedule.slo_consecutive_failures
                      or memory.slo_failures >= SLO_STEP_FAILURES)
            verdict = (Verdict.FAIL if failed else Verdict.MARGINAL if memory.slo_streak
                       else Verdict.PASS)
            results.append(GateResult("latency_slo", verdict, low, 0.01, counts,
                                      f"over {schedule.latency_slo_ms} ms" if over else ""))

    # Prediction sanity: a candidate that always answers the same while the baseline varies.
    sanity = {"candidate_answers": cand_ok, "candidate_varied": cand.varied,
              "baseline_varied": base.varied}
    if cand_ok < MIN_SANITY_REQUESTS:
        results.append(GateResult("sanity", Verdict.NO_DATA, counts=sanity))
    elif not cand.varied and base.varied:
        results.append(GateResult("sanity", Verdict.FAIL, counts=sanity,
                                  detail="the candidate gives one constant answer"))
    else:
        results.append(GateResult("sanity", Verdict.PASS, counts=sanity))

    if shadow:
        gate, log_e = agreement_gate(schedule, window, carried.get("agreement", 0.0),
                                     alphas["agreement"])
        results.append(gate)
        step_log_e["agreement"] = log_e
    else:
        results.append(_split_gate(weight, window))

    deadline = {"elapsed_seconds": round(elapsed, 3), "candidate_requests": cand.requests}
    if elapsed > schedule.progress_deadline_seconds and cand.requests < schedule.min_step_requests:
        results.append(GateResult("progress", Verdict.PAUSE, elapsed,
                                  schedule.progress_deadline_seconds, deadline,
                                  "too little candidate traffic by the deadline"))
    return results, step_log_e


def agreement_gate(schedule: RolloutConfig, window: StepWindow, carried: float,
                   alpha: float) -> tuple[GateResult, float]:
    """Shadow: does the candidate disagree with the baseline more often than it may?

    An e-process for H0 "disagreement rate <= d0 = 1 - min_agreement" against d > d0: with k
    disagreements among n pairs, E = ``exp(log_e_value(k, n, d0))``, the mixture over a
    Beta(1, 1) prior truncated to (d0, 1] of the likelihood ratios against d0. It is valid for
    the whole composite null, not only at d0: for one alternative d1 > d0, a pair's likelihood
    ratio (d1/d0)^x ((1-d1)/(1-d0))^(1-x) has expectation d d1/d0 + (1-d)(1-d1)/(1-d0) when the
    pair disagrees with probability d; that is linear and increasing in d and equals 1 at d0,
    so it is at most 1 for every d <= d0, even if d changes from pair to pair. The product over
    pairs is then a nonnegative supermartingale, so is a mixture of them over a prior fixed in
    advance, and Ville's inequality gives P(sup E >= 1/alpha) <= alpha however often it is
    looked at. (A Wilson bound checked every interval would not be: that is peeking.)

    Returns the verdict and this phase's log e-value, carried like the comparative gates'.
    """
    sh = window.shadow
    disagreements = sh.pairs - sh.agreements
    d0 = 1.0 - schedule.min_agreement
    counts: dict[str, Any] = {
        "pairs": sh.pairs, "agreements": sh.agreements, "disagreements": disagreements,
        "agreement_rate": round(sh.agreements / sh.pairs, 6) if sh.pairs else None,
        "min_agreement": schedule.min_agreement, "dropped": sh.dropped,
        "mean_abs_diff": sh.abs_diff_sum / sh.pairs if sh.pairs else None}
    threshold = math.log(1 / alpha)
    if not sh.labelled and sh.pairs:  # regressors have no labels to agree on
        return GateResult("agreement", Verdict.NOT_APPLICABLE, counts=counts,
                          detail="the outputs are not class labels"), 0.0
    if d0 >= 1.0:
        return GateResult("agreement", Verdict.NOT_APPLICABLE, counts=counts,
                          detail="min_agreement is 0: any agreement will do"), 0.0
    if sh.pairs < MIN_GATE_REQUESTS:
        return GateResult("agreement", Verdict.NO_DATA, carried, threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} shadow pairs"), 0.0
    step = log_e_value(disagreements, sh.pairs, d0)
    total = carried + step
    if total >= threshold:
        verdict, detail = Verdict.FAIL, ("the candidate disagrees with the baseline too often "
                                         "(anytime-valid test)")
    elif total >= threshold / 2:
        verdict, detail = Verdict.MARGINAL, "evidence of disagreement is building"
    else:
        verdict, detail = Verdict.PASS, ""
    return GateResult("agreement", verdict, total, threshold, counts, detail), step


def _split_gate(weight: float, window: StepWindow) -> GateResult:
    """Sample-ratio mismatch on randomly drawn requests: does the split match the weight?"""
    cand = window.candidate.requests - window.candidate.keyed
    base = window.baseline.requests - window.baseline.keyed
    n = cand + base
    counts = {"candidate_unkeyed": cand, "baseline_unkeyed": base, "weight": weight}
    if n < MIN_SRM_REQUESTS or not 0 < weight < 100:
        return GateResult("split", Verdict.NO_DATA, counts=counts)
    w = weight / 100
    chi2 = (cand - n * w) ** 2 / (n * w * (1 - w))
    p = float(stats.chi2.sf(chi2, 1))
    if p < SRM_P_VALUE:
        return GateResult("split", Verdict.PAUSE, p, SRM_P_VALUE, counts,
                          f"observed candidate share {cand / n:.4f} does not match {w:.4f}")
    return GateResult("split", Verdict.PASS, p, SRM_P_VALUE, counts)
