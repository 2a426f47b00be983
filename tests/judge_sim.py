"""A seeded scenario matrix for the judge: the real ``RolloutManager.tick``, fed simulated
counters interval by interval (``make sim`` runs it at 500 rollouts a case and prints the
README's table; ``test_judge_simulation.py`` runs a reduced count with the targets as asserts).

Traffic: Poisson requests at ``rate`` a second; sticky requests (``sticky`` of them) carry a key
and are served by a fixed cohort; the rest draw at the routed weight. Latency is log-normal
(median 10 ms), one draw per run, ``rows`` rows a run (a micro-batch shares its latency). An
SPRT that knows the alternative watches the same events with the same looks, and goes on
alone at the last weight when the rollout stopped before it crossed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.config import parse_config
from canarygate.metrics import Metrics
from canarygate.rollout.judge import alpha_shares
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.persist import Persister
from canarygate.rollout.quality import Evidence, NoEvidence
from canarygate.rollout.state import Phase, RolloutState
from canarygate.router import RoutingTable
from canarygate.runtime import ModelRegistry
from canarygate.stats import LogHistogram, StepStats, VariantStepStats

MODELS = Path(__file__).resolve().parent.parent / "models"
NAME = "breast-cancer"
MEDIAN = 0.010  # seconds
Z99 = 2.3263478740408408


class MemoryPersister(Persister):
    """Keeps the last saved state per model in memory (a restart restores from it)."""

    def __init__(self) -> None:  # no thread, no files
        self.saved: dict[str, RolloutState] = {}
        self.recent = {}

    def save(self, state: RolloutState) -> None:
        self.saved[state.model] = state

    def record(self, decision: dict[str, Any]) -> None:
        pass

    def close(self, timeout: float = 0.0) -> None:
        pass


class Regressor(NoEvidence):
    """The analysis loop of a regressor (no detectors, no drift)."""

    def evidence(self, name: str, state: RolloutState) -> Evidence:
        return Evidence(classifier=False)


class SimManager(RolloutManager):
    """The real controller, less its decision records (nobody reads them here, and building
    them took 40 % of a simulation)."""

    def _record(self, state: RolloutState, action: str, actor: str, reason: str,
                gates: list[Any] | None, before: RolloutState | None = None
                ) -> dict[str, Any]:
        return {"action": action, "reason": reason}


@dataclass(frozen=True)
class Scenario:
    name: str
    null: bool  # the candidate is as good as the baseline (a rollback is a false one)
    base_error: float = 0.01
    error_ratio: float = 1.0
    onset_step: int = 0  # the candidate differs from this step on
    shift: float = 1.0  # the candidate's latency multiplied
    tail: float = 0.0  # the candidate's slowest share of runs ten times slower
    sigma: float = 0.5
    rate: float = 100.0  # requests a second
    sticky: float = 0.0  # share of requests with a sticky key
    rows: int = 1  # rows a run
    outage: bool = False  # both arms at 60 % errors for one minute, from minute 3
    slo_over: float | None = None  # the candidate's share of runs over the SLO
    restarts: bool = False  # the gateway restarts in the middle of every step
    by_hand: bool = False  # a person sets 20 % at the 5 % step, resumes 5 minutes later
    hold_hours: float = 0.0  # awaiting promotion this long (no auto-promotion)
    bias: float | None = None  # a regressor: labels on every answer; candidate's bias in sigma
    schedule: dict[str, Any] = field(default_factory=dict)
    sprt: str = "errors"  # the stream the SPRT watches: errors, latency, tail


def registry() -> ModelRegistry:
    config = parse_config({"models_dir": str(MODELS), "models": [{
        "name": NAME, "baseline": "1", "versions": {"1": {"path": f"{NAME}/1"},
                                                    "2": {"path": f"{NAME}/2"}}}]})
    return ModelRegistry.load(config)


class Traffic:
    """One rollout's simulated requests; adds an interval to a step's counters."""

    def __init__(self, sc: Scenario, rng: np.random.Generator) -> None:
        self.sc, self.rng = sc, rng
        # The sticky cohort's error rate against the population's (users differ: Gamma, CV 1).
        self.cohort = float(rng.gamma(1.0, 1.0))
        self.slo = (MEDIAN * math.exp(sc.sigma * 2.4089) if sc.slo_over is None
                    else MEDIAN * math.exp(sc.sigma * _z(1 - sc.slo_over)))

    def active(self, step: int) -> bool:
        return step >= self.sc.onset_step

    def error_rate(self, candidate: bool, step: int, minute: float) -> float:
        sc = self.sc
        if sc.outage and 3 <= minute < 4:
            return 0.6
        ratio = sc.error_ratio if candidate and self.active(step) else 1.0
        return min(1.0, sc.base_error * ratio)

    def latencies(self, n: int, candidate: bool, step: int) -> np.ndarray:
        sc = self.sc
        z = self.rng.standard_normal(n)
        seconds = MEDIAN * np.exp(sc.sigma * z)
        if candidate and self.active(step):
            seconds *= sc.shift
            if sc.tail:
                seconds[z > _z(1 - sc.tail)] *= 10.0
        return seconds

    def arm(self, stats: VariantStepStats, n: int, keyed: int, candidate: bool, step: int,
            minute: float) -> tuple[int, int, int, int]:
        """Adds n unkeyed and ``keyed`` keyed requests; the unkeyed events (errors, runs,
        slow runs, tail runs) for the SPRT."""
        p = self.error_rate(candidate, step, minute)
        errors = int(self.rng.binomial(n, p))
        keyed_errors = int(self.rng.binomial(keyed, min(1.0, p * self.cohort)))
        stats.requests += n + keyed
        stats.keyed += keyed
        stats.errors += errors + keyed_errors
        stats.keyed_errors += keyed_errors
        ok = n - errors
        runs = -(-ok // self.sc.rows)
        lat = self.latencies(runs, candidate, step)
        hist = stats.latency
        add_buckets(hist, lat, self.sc.rows)
        hist.count += runs * self.sc.rows
        hist.sum += float(lat.sum()) * self.sc.rows
        slow, tail = int((lat > stats.tau).sum()), int((lat > stats.tail_tau).sum())
        stats.runs += runs
        stats.timed_runs += runs
        stats.slow_runs += slow
        stats.tail_runs += tail
        stats.slo_runs += int((lat > stats.slo_seconds).sum())
        stats.over_slo += int((lat > stats.slo_seconds).sum()) * self.sc.rows
        stats.first_output, stats.varied, stats.differs = 0.0, True, stats.requests // 2
        return errors, runs, slow, tail

    def residuals(self, n: int, candidate: bool, step: int) -> np.ndarray:
        """Absolute errors of n labelled answers (residual sigma 1; the candidate biased)."""
        bias = (self.sc.bias or 0.0) if candidate and self.active(step) else 0.0
        return np.abs(self.rng.standard_normal(n) + bias)


def add_buckets(hist: LogHistogram, values: np.ndarray, times: int = 1) -> None:
    """``LogHistogram.add`` of every value (``times`` each), its buckets counted at once."""
    if not values.size:
        return
    keys = np.ceil(np.log(values) * hist._inv_log_gamma).astype(int)
    low = int(keys.min())
    counts = np.bincount(keys - low)
    buckets = hist.buckets
    for offset in np.flatnonzero(counts).tolist():
        key = low + offset
        buckets[key] = buckets.get(key, 0) + int(counts[offset]) * times


class NullMetrics(Metrics):
    """The controller's Prometheus figures, not kept (nobody scrapes a simulation)."""

    def verdict(self, *args: Any) -> None:
        pass

    def gate_figures(self, *args: Any) -> None:
        pass

    def rollout(self, *args: Any) -> None:
        pass

    def decision(self, *args: Any) -> None:
        pass


def _z(q: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(q)


@dataclass
class Sprt:
    """The SPRT of the stream the scenario changes, knowing the true alternative: the log
    likelihood ratio of the candidate's events, carried across steps."""

    threshold: float
    carried: float = 0.0
    step_llr: float = 0.0
    requests: int | None = None  # candidate requests at its rollback

    def look(self, k: int, n: int, rho0: float, rho1: float, served: int) -> None:
        if self.requests is not None or rho1 <= rho0 or n == 0:
            return
        self.step_llr = (k * math.log(rho1 / rho0)
                         + (n - k) * (math.log1p(-rho1) - math.log1p(-rho0)))
        if self.carried + self.step_llr >= self.threshold:
            self.requests = served

    def grow(self, llr: float, served: int) -> None:
        """Adds the log likelihood ratio of more of the step's events."""
        if self.requests is not None:
            return
        self.step_llr += llr
        if self.carried + self.step_llr >= self.threshold:
            self.requests = served

    def fold(self) -> None:
        self.carried += self.step_llr
        self.step_llr = 0.0


@dataclass(frozen=True)
class Outcome:
    phase: Phase
    served: int  # candidate requests until the rollout stopped
    sprt: int | None  # candidate requests until the SPRT crossed (None: it never did)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def exceed(t: float, sc: Scenario, candidate: bool) -> float:
    """P(a run's latency > t) under the scenario (the candidate changed, when it is)."""
    from statistics import NormalDist
    cdf = NormalDist().cdf
    s = sc.shift if candidate else 1.0
    z1 = math.log(t / (MEDIAN * s)) / sc.sigma
    if not candidate or not sc.tail:
        return 1 - cdf(z1)
    zq, z10 = _z(1 - sc.tail), math.log(t / (MEDIAN * s * 10)) / sc.sigma
    return (1 - cdf(max(zq, z10))) + max(0.0, cdf(zq) - cdf(z1))


def sprt_look(sprt: Sprt, sc: Scenario, traffic: Traffic, m: RolloutManager, w: float,
              step: int, minute: float, served: int) -> None:
    stats = m.step_stats(NAME)
    cand, base = stats.candidate, stats.baseline
    if not traffic.active(step) or w <= 0 or w >= 1:
        return
    if sc.sprt == "errors":
        pc = traffic.error_rate(True, step, minute)
        pb = traffic.error_rate(False, step, minute)
        k, n, rho0 = cand.unkeyed_errors, cand.unkeyed_errors + base.unkeyed_errors, w
        if pc + pb == 0:
            return
        rho1 = w * pc / (w * pc + (1 - w) * pb)
    else:
        t = base.tau if sc.sprt == "latency" else base.tail_tau
        if math.isinf(t) or cand.timed_runs + base.timed_runs == 0:
            return
        s = cand.timed_runs / (cand.timed_runs + base.timed_runs)
        tol = m.states[NAME].schedule.latency_tolerance
        rho0 = tol * s / (tol * s + 1 - s)
        pc, pb = exceed(t, sc, True), exceed(t, sc, False)
        rho1 = s * pc / (s * pc + (1 - s) * pb)
        events = ((cand.slow_runs, base.slow_runs) if sc.sprt == "latency"
                  else (cand.tail_runs, base.tail_runs))
        k, n = events[0], events[0] + events[1]
    sprt.look(k, n, rho0, rho1, served)


def simulate(sc: Scenario, reg: ModelRegistry, metrics: Metrics, rng: np.random.Generator,
             interval: float = 10.0, max_hours: float = 48.0) -> Outcome:
    traffic = Traffic(sc, rng)
    schedule: dict[str, Any] = {"interval_seconds": interval, "accuracy_gate": False,
                                "auto_promote": sc.hold_hours == 0, **sc.schedule}
    if sc.slo_over is not None:
        schedule["latency_slo_ms"] = traffic.slo * 1000
    from canarygate.config import RolloutConfig
    config = RolloutConfig(**schedule)
    interval = config.interval_seconds
    persister, clock = MemoryPersister(), Clock()
    m = SimManager(reg, RoutingTable(), persister, metrics, clock=clock,
                   evidence=Regressor() if sc.bias is not None else None)
    m.restore({})
    m.start(NAME, "2", config, actor="sim", reason="simulation")
    gate = {"errors": "errors", "bias": "accuracy"}.get(sc.sprt, "latency")
    sprt = Sprt(math.log(1 / alpha_shares(config)[gate]))
    t0, served, window = clock.now, 0, m.step_stats(NAME)
    restarted: set[int] = set()
    hand: float | None = None
    held: float | None = None
    w = 0.0
    while clock.now - t0 < max_hours * 3600:
        state = m.states[NAME]
        if state.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            break
        if state.phase == Phase.AWAITING_PROMOTION:
            held = held or clock.now
            if clock.now - held >= sc.hold_hours * 3600:
                break
        if state.phase == Phase.PAUSED and hand is None:
            break
        m, hand = _people(sc, m, persister, metrics, clock, state, restarted, hand)
        routing = m.table.get(NAME)
        w = routing.weight / 100 if routing.candidate is not None else 0.0
        if m.step_stats(NAME) is not window:
            sprt.fold()
            window = m.step_stats(NAME)
        minute = (clock.now - t0) / 60
        n = int(rng.poisson(sc.rate * interval))
        keyed = int(rng.binomial(n, sc.sticky))
        nc, kc = int(rng.binomial(n - keyed, w)), int(rng.binomial(keyed, w))
        ec = traffic.arm(window.candidate, nc, kc, True, state.step, minute)[0]
        eb = traffic.arm(window.baseline, n - keyed - nc, keyed - kc, False, state.step,
                         minute)[0]
        served += nc + kc
        if sc.bias is not None:
            llr = feedback(traffic, window, nc - ec, n - keyed - nc - eb, w, state.step,
                           clock.now)
            if traffic.active(state.step) and 0 < w < 1:
                sprt.grow(llr, served)
        else:
            sprt_look(sprt, sc, traffic, m, w, state.step, minute, served)
        clock.now += interval
        m.tick(NAME)
    phase = m.states[NAME].phase
    if not sc.null and sprt.requests is None:
        _sprt_alone(sprt, sc, traffic, m, w, rng, interval, served)
    return Outcome(phase, served, sprt.requests)


def feedback(traffic: Traffic, window: StepStats, n_cand: int, n_base: int, w: float,
             step: int, now: float) -> float:
    """Labels for every answered unkeyed request of the interval: each arm's absolute errors
    to its histogram and to the error bets; the log likelihood ratio of the rows' variants
    given their errors under the true bias (the SPRT's)."""
    rc, rb = traffic.residuals(n_cand, True, step), traffic.residuals(n_base, False, step)
    for arm, rows in ((window.candidate, rc), (window.baseline, rb)):
        arm.labelled += rows.size
        hist = arm.abs_errors
        add_buckets(hist, rows)
        hist.count += rows.size
        hist.sum += float(rows.sum())
    window.bets.add(rc, rb, w, now)
    mu = traffic.sc.bias or 0.0
    if not 0 < w < 1 or mu == 0:
        return 0.0

    def rho1(a: np.ndarray) -> np.ndarray:
        r = np.exp(-mu * mu / 2) * np.cosh(mu * a)  # folded normals: f_c(a) / f_b(a)
        return np.asarray(w * r / (w * r + 1 - w))

    return float(np.log(rho1(rc) / w).sum() + np.log((1 - rho1(rb)) / (1 - w)).sum())


def _people(sc: Scenario, m: RolloutManager, persister: MemoryPersister, metrics: Metrics,
            clock: Clock, state: RolloutState, restarted: set[int], hand: float | None
            ) -> tuple[RolloutManager, float | None]:
    """A restart in the middle of each step; a weight set by hand and resumed later."""
    elapsed = clock.now - (state.step_started_at or clock.now)
    if sc.restarts and state.phase == Phase.PROGRESSING and state.step not in restarted and (
            elapsed >= max(state.schedule.min_step_seconds / 2, 30)):
        restarted.add(state.step)
        m = SimManager(m.registry, RoutingTable(), persister, metrics, clock=clock,
                       evidence=m.source)
        m.restore(dict(persister.saved))
    if sc.by_hand and hand is None and state.step == 1 and elapsed >= 30 and (
            state.phase == Phase.PROGRESSING) and -1 not in restarted:
        restarted.add(-1)  # once
        m.set_weight(NAME, 20, actor="sim", reason="by hand")
        return m, clock.now
    if hand is not None and clock.now - hand >= 300 and state.phase == Phase.PAUSED:
        m.resume(NAME, actor="sim", reason="by hand")
        return m, None
    return m, hand


def _sprt_alone(sprt: Sprt, sc: Scenario, traffic: Traffic, m: RolloutManager, w: float,
                rng: np.random.Generator, interval: float, served: int) -> None:
    """The rollout stopped first: the SPRT goes on alone at the last weight, with the last
    step's thresholds for latency (else its median would count only the runs where it was
    faster than the rollout)."""
    if not 0 < w < 1:
        return
    step = max(m.states[NAME].step, sc.onset_step)
    if sc.sprt in ("latency", "tail"):
        base = m.step_stats(NAME).baseline
        t = base.tau if sc.sprt == "latency" else base.tail_tau
        if math.isinf(t):
            return
        pc, pb = exceed(t, sc, True), exceed(t, sc, False)
        tol = m.states[NAME].schedule.latency_tolerance
        rho0, rho1 = tol * w / (tol * w + 1 - w), w * pc / (w * pc + (1 - w) * pb)
        binomial_sprt(sprt, rng, sc.rate * interval, w, pc, pb, rho0, rho1, served)
        return
    if sc.sprt == "bias":
        sprt.fold()
        scratch = StepStats.fresh()
        while sprt.requests is None and served < 2_000_000:
            total = int(rng.poisson(sc.rate * interval))
            nc = int(rng.binomial(total, w))
            served += nc
            sprt.grow(feedback(traffic, scratch, nc, total - nc, w, step, 0.0), served)
        return
    pc, pb = traffic.error_rate(True, step, 1e9), traffic.error_rate(False, step, 1e9)
    rho1 = w * pc / (w * pc + (1 - w) * pb)
    binomial_sprt(sprt, rng, sc.rate * interval, w, pc, pb, w, rho1, served)


def binomial_sprt(sprt: Any, rng: np.random.Generator, mean: float, w: float, pc: float,
                  pb: float, rho0: float, rho1: float, served: int) -> None:
    """The SPRT alone at weight ``w`` (``mean`` requests an interval): each interval's
    candidate share of the events (candidate rate ``pc``, baseline ``pb``) until it crosses."""
    k = n = 0
    sprt.fold()
    while sprt.requests is None and served < 2_000_000:
        total = int(rng.poisson(mean))
        nc = int(rng.binomial(total, w))
        ec, eb = int(rng.binomial(nc, pc)), int(rng.binomial(total - nc, pb))
        k, n, served = k + ec, n + ec + eb, served + nc
        sprt.look(k, n, rho0, rho1, served)


SPRT_ONLY = ("errors", "latency", "tail")

LOW_TRAFFIC = {"steps": [10, 25, 50, 100], "min_step_seconds": 600, "min_step_requests": 100,
               "progress_deadline_seconds": 7200, "interval_seconds": 60}

REGRESSOR = {"accuracy_gate": True}  # alpha in thirds: errors, latency, accuracy
# The demo's diabetes candidate answers its baseline + 40; the baseline's residual standard
# deviation on scikit-learn's diabetes data is about 54 (models/build.py's linear model).
DIABETES_BIAS = 40 / 54

MATRIX = (
    Scenario("identical, p0 1 %", True),
    Scenario("identical, p0 5 %", True, base_error=0.05),
    Scenario("identical, half the requests sticky (cohort errors Gamma CV 1)", True,
             sticky=0.5),
    Scenario("identical, 8 rows a run share one latency", True, rows=8),
    Scenario("identical, shared outage (both 60 % errors for 1 min)", True, outage=True),
    Scenario("identical, SLO met (0.8 % over), 6 h awaiting promotion", True,
             slo_over=0.008, hold_hours=6, schedule={"interval_seconds": 30}),
    Scenario("identical, a restart in the middle of every step", True, restarts=True),
    Scenario("identical, 20 % set by hand at the 5 % step, resumed 5 min later", True,
             by_hand=True),
    Scenario("identical, 50 requests a minute (low-traffic schedule)", True, rate=50 / 60,
             schedule=LOW_TRAFFIC),
    Scenario("errors x1.3, p0 1 %", False, error_ratio=1.3),
    Scenario("errors x1.5, p0 1 %", False, error_ratio=1.5),
    Scenario("errors x2, p0 1 %", False, error_ratio=2.0),
    Scenario("errors x2, p0 0.1 % (steps sized from p0)", False, base_error=0.001,
             error_ratio=2.0),
    Scenario("errors x1.3, p0 5 %", False, base_error=0.05, error_ratio=1.3),
    Scenario("errors x1.5, p0 5 %", False, base_error=0.05, error_ratio=1.5),
    Scenario("errors x2, p0 5 %", False, base_error=0.05, error_ratio=2.0),
    Scenario("errors x2 from the 25 % step, p0 1 %", False, error_ratio=2.0, onset_step=3),
    Scenario("errors x2, p0 1 %, a restart in every step", False, error_ratio=2.0,
             restarts=True),
    Scenario("errors x2, p0 1 %, 50 requests a minute", False, error_ratio=2.0,
             rate=50 / 60, schedule=LOW_TRAFFIC),
    Scenario("fails every request, 50 requests a minute", False, error_ratio=100.0,
             rate=50 / 60, schedule=LOW_TRAFFIC),
    Scenario("identical, p0 0.1 %", True, base_error=0.001),
    Scenario("latency 20 % slower (LN sigma 0.5)", False, shift=1.2, sprt="latency"),
    Scenario("latency 20 % slower (LN sigma 1.0)", False, shift=1.2, sigma=1.0, sprt="tail"),
    Scenario("slowest 1 % ten times slower", False, tail=0.01, sprt="tail"),
    Scenario("regressor, identical (labels on every answer)", True, bias=0.0,
             schedule=REGRESSOR),
    Scenario("regressor bias sigma/4", False, bias=0.25, schedule=REGRESSOR, sprt="bias"),
    Scenario("regressor bias sigma/2", False, bias=0.5, schedule=REGRESSOR, sprt="bias"),
    Scenario("diabetes +40 (regressor bias 0.74 sigma)", False, bias=DIABETES_BIAS,
             schedule=REGRESSOR, sprt="bias"),
)


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    runs: int
    rolled_back: int
    promoted: int
    median: float | None  # candidate requests to the rollback, among rollbacks
    sprt_median: float | None

    @property
    def share(self) -> float:
        return self.rolled_back / self.runs


def run_case(sc: Scenario, runs: int, seed: int, reg: ModelRegistry,
             metrics: Metrics) -> Row:
    rng = np.random.default_rng(seed)
    outs = [simulate(sc, reg, metrics, rng) for _ in range(runs)]
    caught = [o.served for o in outs if o.phase == Phase.ROLLED_BACK]
    sprt = [o.sprt for o in outs if o.sprt is not None]
    return Row(sc, runs, len(caught), sum(o.phase == Phase.PROMOTED for o in outs),
               float(np.median(caught)) if caught else None,
               float(np.median(sprt)) if sprt and not sc.null else None)


def table(rows: list[Row]) -> str:
    out = ["| case | runs | rolled back | promoted | median candidate requests to rollback "
           "| SPRT median | ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        med = f"{r.median:,.0f}" if r.median is not None else "-"
        sprt = f"{r.sprt_median:,.0f}" if r.sprt_median is not None else "-"
        ratio = (f"{r.median / r.sprt_median:.2f}" if r.median and r.sprt_median else "-")
        out.append(f"| {r.scenario.name} | {r.runs} | {100 * r.share:.1f} % | "
                   f"{100 * r.promoted / r.runs:.1f} % | {med} | {sprt} | {ratio} |")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    runs = int(argv[1]) if len(argv) > 1 else 500
    only = argv[2] if len(argv) > 2 else ""
    part, parts = (int(x) for x in (argv[3] if len(argv) > 3 else "0/1").split("/"))
    first = int(argv[4]) if len(argv) > 4 else 0  # skip the cases before this one
    skip = [s for s in os.environ.get("SIM_SKIP", "").split("|") if s]  # names containing
    reg, metrics = registry(), NullMetrics()
    rows = []
    for i, sc in enumerate(MATRIX):
        if (only and only not in sc.name) or i % parts != part or i < first or any(
                s in sc.name for s in skip):
            continue
        started = time.monotonic()
        rows.append(run_case(sc, runs, 1000 + i, reg, metrics))
        print(table(rows[-1:]).splitlines()[-1], f"({time.monotonic() - started:.0f} s)",
              file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv)
