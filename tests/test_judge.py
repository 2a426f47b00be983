"""The judge's statistics against independent references, and the review's regressions."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from pathlib import Path

import mpmath
import numpy as np
import pytest
from scipy import stats

from canarygate.config import RolloutConfig, parse_config
from canarygate.errors import ConfigError, Conflict
from canarygate.metrics import Metrics
from canarygate.rollout.evalues import Carried, log_beta_tail, log_e_grid, log_e_value, wilson
from canarygate.rollout.gates import agreement_gate
from canarygate.rollout.judge import alpha_shares
from canarygate.rollout.manager import QUIET_HOLD_EVERY, RolloutManager
from canarygate.rollout.persist import Persister
from canarygate.rollout.state import Phase, RolloutState
from canarygate.rollout.store import FileStateStore
from canarygate.router import RoutingTable
from canarygate.runtime import ModelRegistry
from canarygate.runtime.catalog import VersionCatalog
from canarygate.stats import StepStats
from conftest import MODELS, FakeClock, rollout_manager


def exact_log_e(k: int, n: int, rho0: float) -> float:
    """The research note's formula, evaluated with 60 significant digits (mpmath)."""
    mpmath.mp.dps = 60
    a, b, r = mpmath.mpf(1 + k), mpmath.mpf(1 + n - k), mpmath.mpf(rho0)
    tail = mpmath.betainc(b, a, 0, 1 - r, regularized=True)  # P(X > r), without cancellation
    log_mix = mpmath.log(mpmath.beta(a, b)) + mpmath.log(tail) - mpmath.log(1 - r)
    return float(log_mix - (k * mpmath.log(r) + (n - k) * mpmath.log(1 - r)))


@pytest.mark.parametrize(("k", "n", "rho0"), [
    (3, 3, 0.5), (0, 3, 0.5), (30, 100, 0.1), (5, 100, 0.1), (1000, 2000, 0.5),
    (0, 1100, 0.5), (10, 2000, 0.5), (200, 4000, 0.1), (0, 50_000, 0.25), (3, 3, 0.01),
])
def test_log_e_value_matches_high_precision(k: int, n: int, rho0: float) -> None:
    assert log_e_value(k, n, rho0) == pytest.approx(exact_log_e(k, n, rho0), rel=1e-9, abs=1e-9)


def test_log_beta_tail_matches_scipy_where_scipy_is_finite() -> None:
    for a in (1, 3, 10, 50, 200):
        for b in (1, 5, 40, 300):
            for x in (0.01, 0.1, 0.5, 0.9):
                assert log_beta_tail(x, a, b) == pytest.approx(
                    float(stats.beta.logsf(x, a, b)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (1, 10), (3, 50), (49, 50), (50, 50),
                                      (500, 1000), (7, 100_000), (99_990, 100_000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    reference = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson(k, n)
    assert low == pytest.approx(reference.low, rel=1e-9, abs=1e-12)
    assert high == pytest.approx(reference.high, rel=1e-9, abs=1e-12)


def test_wilson_bounds_solve_the_score_equation() -> None:
    # Wilson's interval is the set of p with |p - phat| <= z sqrt(p (1 - p) / n).
    z = stats.norm.ppf(0.975)
    for k, n in ((0, 10), (3, 50), (49, 50), (500, 1000)):
        low, high = wilson(k, n)
        for bound in (low, high):
            assert abs(abs(bound - k / n) - z * math.sqrt(bound * (1 - bound) / n)) < 1e-7


def manager(tmp: Path, **schedule: object) -> tuple[RolloutManager, FakeClock, Persister]:
    config = parse_config({
        "models_dir": str(MODELS),
        "models": [{"name": "breast-cancer", "baseline": "1", "candidate": "2",
                    "versions": {"1": {"path": "breast-cancer/1"},
                                 "2": {"path": "breast-cancer/2"}},
                    "rollout": {"steps": [10, 50, 100], "interval_seconds": 1,
                                "min_step_seconds": 0, "min_step_requests": 100,
                                "auto_promote": True, **schedule}}],
    })
    return rollout_manager(ModelRegistry.load(config), tmp)


def test_slo_gate_is_the_one_sample_e_process_on_runs(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path, latency_slo_ms=100)
    m.restore({})
    w = m.step_stats("breast-cancer")
    w.candidate.requests += 10
    w.candidate.runs += 10
    clock.now += 1
    decision = m.tick("breast-cancer")
    assert decision is not None and decision["action"] == "hold"
    assert "no data: " in decision["reason"] and "latency_slo" in decision["reason"]
    w.candidate.requests += 190
    w.candidate.runs += 190
    w.candidate.slo_runs += 10  # 5 % of the candidate's runs over the SLO
    w.baseline.requests += 1800
    clock.now += 1
    decision = m.tick("breast-cancer")
    persister.close()
    assert decision is not None and decision["action"] == "rollback"
    slo = next(g for g in decision["gates"] if g["gate"] == "latency_slo")
    # The restart average at the first step of the ramp, of the grid mixture's evidence.
    steps = len(m.states["breast-cancer"].schedule.steps)
    assert slo["statistic"] == pytest.approx(Carried((), 0, steps).total(
        log_e_grid(10, 200, 0.01)))
    assert slo["threshold"] == pytest.approx(math.log(1 / alpha_shares(
        m.states["breast-cancer"].schedule)["latency_slo"]))
    assert m.states["breast-cancer"].figures["gate"] == "latency_slo"


def test_slo_met_is_not_rolled_back_however_long_it_waits() -> None:
    """0.8 % of runs over the SLO, 200 runs an interval, looked at every interval for 24 h
    (8,640 intervals): the Wilson bound per interval rolled this back in every such run."""
    rng = np.random.default_rng(11)
    alpha = 0.01 / 4
    rolled = 0
    for _ in range(40):
        over = runs = 0
        for over_now in rng.binomial(200, 0.008, 8640):
            over, runs = over + int(over_now), runs + 200
            if log_e_grid(over, runs, 0.01) >= math.log(1 / alpha):
                rolled += 1
                break
    assert rolled == 0


def test_restore_keeps_a_rollout_whose_candidate_is_gone_paused_and_unserved(
    tmp_path: Path,
) -> None:
    m, _, persister = manager(tmp_path)
    stale = RolloutState(model="breast-cancer", baseline="1", candidate="9",
                         phase=Phase.PROGRESSING, step=0, weight=10, revision=12,
                         carried_log_e={"errors": 1.5})
    m.restore({"breast-cancer": stale})  # version 9 is not loaded: kept, never restarted
    state = m.states["breast-cancer"]
    assert (state.candidate, state.phase, state.resume_phase) == ("9", Phase.PAUSED,
                                                                  Phase.PROGRESSING)
    assert state.revision == 13 and state.carried_log_e == {"errors": 1.5}
    assert "'9'" in state.reason and "not served" in state.reason
    routing = m.table.get("breast-cancer")
    assert routing is not None and routing.candidate is None and routing.weight == 0
    log = persister.decisions("breast-cancer")
    assert [(d["action"], d["actor"]) for d in log] == [("pause", "gateway")]
    for act in (m.resume, m.promote):
        with pytest.raises(Conflict, match="not loaded"):
            act("breast-cancer", actor="test", reason="too early")
    with pytest.raises(Conflict, match="not loaded"):
        m.set_weight("breast-cancer", 50, actor="test", reason="too early")
    m.rollback("breast-cancer", actor="test", reason="check the store accepts it")
    persister.flush()
    stored = FileStateStore(tmp_path / "rollouts.json").load()["breast-cancer"]
    assert stored.phase == Phase.ROLLED_BACK and stored.revision == 14


def test_restore_without_the_stored_baseline_serves_the_configs_and_starts_nothing(
    tmp_path: Path,
) -> None:
    m, _, persister = manager(tmp_path)  # the config names candidate 2
    promoted = RolloutState(model="breast-cancer", baseline="9", phase=Phase.PROMOTED,
                            revision=7)
    m.restore({"breast-cancer": promoted})
    persister.close()
    state = m.states["breast-cancer"]
    assert (state.baseline, state.candidate, state.phase) == ("1", None, Phase.IDLE)
    assert state.revision == 8 and "'9'" in state.reason and "by hand" in state.reason
    assert [d["action"] for d in persister.decisions("breast-cancer")] == ["restore"]


def test_registered_versions_are_loaded_again_before_state_is_restored(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    for source, target in (("1", "breast-cancer/1"), ("2", "breast-cancer/2"), ("3", "spare/3")):
        shutil.copytree(MODELS / "breast-cancer" / source, models / target)
    config = parse_config({
        "models_dir": str(models),
        "models": [{"name": "breast-cancer", "baseline": "1", "candidate": "2",
                    "versions": {"1": {"path": "breast-cancer/1"},
                                 "2": {"path": "breast-cancer/2"}}}],
    })
    store = FileStateStore(tmp_path / "state" / "rollouts.json")
    running = ModelRegistry.load(config)
    catalog = VersionCatalog(config, running, store)
    served = running.get("breast-cancer")
    loaded = catalog.load(served, "3", "spare/3")
    catalog.persist(served, loaded, "spare/3")
    catalog.install(served, loaded)
    assert list(served.versions) == ["1", "2", "3"]
    stored = {"breast-cancer": RolloutState(model="breast-cancer", baseline="1", candidate="3",
                                            phase=Phase.PROGRESSING, step=0, weight=10,
                                            revision=4)}

    def restart() -> RolloutManager:
        registry = ModelRegistry.load(config)  # a new process: only the config's versions
        persister = Persister(store, tmp_path / "state" / "decisions.jsonl")
        m = RolloutManager(registry, RoutingTable(), persister, Metrics(), clock=FakeClock())
        m.restore(stored, VersionCatalog(config, registry, store))
        persister.close()
        return m

    m = restart()
    state, routing = m.states["breast-cancer"], m.table.get("breast-cancer")
    assert (state.candidate, state.phase, state.revision) == ("3", Phase.PROGRESSING, 4)
    assert routing is not None and routing.candidate is not None
    assert (routing.candidate.version, routing.weight) == ("3", 10)

    shutil.rmtree(models / "spare" / "3")
    m = restart()
    state, routing = m.states["breast-cancer"], m.table.get("breast-cancer")
    assert (state.candidate, state.phase) == ("3", Phase.PAUSED)  # not the config's 2
    assert "does not exist" in state.reason and "'3'" in state.reason
    assert routing is not None and routing.candidate is None and routing.weight == 0


def test_restore_restarts_the_step_clock(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path)
    old = RolloutState(model="breast-cancer", baseline="1", candidate="2",
                       phase=Phase.PROGRESSING, step=0, weight=10, revision=3,
                       step_started_at=clock.now - 25 * 60)
    m.restore({"breast-cancer": old})
    persister.close()
    assert m.states["breast-cancer"].step_started_at == clock.now
    assert m.states["breast-cancer"].revision == 3  # kept as stored: nothing was decided


def test_paused_rollout_still_rolls_back_on_failure(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    m.set_weight("breast-cancer", 30, actor="test", reason="hand")
    window = m.step_stats("breast-cancer")
    window.candidate.requests, window.candidate.errors = 100, 90
    window.baseline.requests = 300
    clock.now += 1
    m.tick("breast-cancer")
    persister.close()
    assert m.states["breast-cancer"].phase == Phase.ROLLED_BACK


def test_shadow_comparison_of_mismatched_shapes() -> None:
    from canarygate.serving.shadow import compare as _compare
    from canarygate.stats import StepStats

    window = StepStats.fresh()
    _compare(window.shadow, np.array([1, 0, 1]), np.array([[1], [0], [0]]))
    assert (window.shadow.pairs, window.shadow.agreements) == (3, 2)
    _compare(window.shadow, np.array([1, 0]), np.array([1, 0, 1, 1]))
    assert (window.shadow.pairs, window.shadow.agreements) == (5, 2)


def feed(window: StepStats, candidate: int, baseline: int, *, keyed: bool = False) -> None:
    """Requests without errors, in the arms' counters (as the request path counts them), each
    its own run, none slow; the slow thresholds frozen."""
    window.thresholds(0.01, 0.05)
    for arm, n in ((window.candidate, candidate), (window.baseline, baseline)):
        arm.requests += n
        if keyed:
            arm.keyed += n
        else:
            arm.runs += n
            arm.timed_runs += n


@pytest.mark.parametrize(("candidate", "baseline", "keyed", "action"), [
    (400, 1600, False, "pause"),  # 20 % of randomly drawn requests at a weight of 10 %
    (200, 1800, False, "advance"),  # the split matches
    (400, 1600, True, "hold"),  # sticky keys are no random draw: no split test, no data
])
def test_split_mismatch_pauses_and_rolls_nothing_back(
    tmp_path: Path, candidate: int, baseline: int, keyed: bool, action: str
) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    feed(m.step_stats("breast-cancer"), candidate, baseline, keyed=keyed)
    clock.now += 1
    decision = m.tick("breast-cancer")
    persister.close()
    assert decision is not None and decision["action"] == action
    split = next(g for g in decision["gates"] if g["gate"] == "split")
    state = m.states["breast-cancer"]
    if action == "pause":
        assert split["verdict"] == "pause" and split["statistic"] >= split["threshold"]
        assert (state.phase, state.weight, state.resume_phase) == (Phase.PAUSED, 10,
                                                                   Phase.PROGRESSING)
        assert state.figures["gate"] == "split" and "0.2000" in state.reason
    elif keyed:
        assert split["verdict"] == "no_data" and "no data: errors, latency" in decision["reason"]
        assert state.phase == Phase.PROGRESSING and state.weight == 10
    else:
        assert split["verdict"] == "pass"
        assert state.phase == Phase.PROGRESSING and state.weight == 50


def test_progress_deadline_pauses_a_step_short_of_traffic(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path, progress_deadline_seconds=600)
    m.restore({})
    feed(m.step_stats("breast-cancer"), 50, 450)  # min_step_requests is 100
    clock.now += 599
    before = m.tick("breast-cancer")
    clock.now += 2
    after = m.tick("breast-cancer")
    persister.close()
    assert before is not None and before["action"] == "hold"
    assert after is not None and after["action"] == "pause"
    state = m.states["breast-cancer"]
    assert state.phase == Phase.PAUSED and state.weight == 10
    assert state.figures["gate"] == "progress"
    assert state.figures["counts"] == {"elapsed_seconds": 601.0, "candidate_requests": 50}


@pytest.mark.parametrize("baseline_varies", [True, False])
def test_sanity_gate_pauses_for_a_constant_candidate(tmp_path: Path,
                                                     baseline_varies: bool) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    window = m.step_stats("breast-cancer")
    for _ in range(60):  # the first tick freezes the slow thresholds from these
        window.baseline.record(0.001, False, False, 1.0)
    m.tick("breast-cancer")
    for _ in range(120):
        window.candidate.record(0.001, False, False, 1.0)
    for i in range(1020):
        window.baseline.record(0.001, False, False, float(i % 2) if baseline_varies else 1.0)
    clock.now += 1
    decision = m.tick("breast-cancer")
    persister.close()
    assert decision is not None
    sanity = next(g for g in decision["gates"] if g["gate"] == "sanity")
    if baseline_varies:
        assert decision["action"] == "pause" and sanity["verdict"] == "pause"
        assert m.states["breast-cancer"].figures["gate"] == "sanity"
        assert sanity["counts"] == {"candidate_answers": 120, "candidate_varied": False,
                                    "baseline_varied": True, "baseline_differing": 510,
                                    "chance_if_identical": pytest.approx(0.5 ** 119)}
    else:  # a model that answers one class to everything is not judged by its twin
        assert decision["action"] == "advance" and sanity["verdict"] == "pass"


def test_paused_judgements_are_logged_when_they_change_and_periodically(
    tmp_path: Path,
) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    m.pause("breast-cancer", actor="test", reason="lunch")
    logged = []
    for _ in range(3 * QUIET_HOLD_EVERY + 10):
        clock.now += 1
        logged.append(m.tick("breast-cancer"))
    holds = [d for d in logged if d is not None]
    assert [logged.index(d) for d in holds] == [0, QUIET_HOLD_EVERY, 2 * QUIET_HOLD_EVERY,
                                                3 * QUIET_HOLD_EVERY]
    assert all(d["action"] == "hold" and d["reason"] == "paused: lunch" and d["gates"]
               for d in holds)
    feed(m.step_stats("breast-cancer"), 100, 900)  # health: no data -> pass
    clock.now += 1
    changed = m.tick("breast-cancer")
    persister.close()
    assert changed is not None and changed["action"] == "hold"
    assert {g["gate"]: g["verdict"] for g in changed["gates"]}["health"] == "pass"
    assert m.states["breast-cancer"].phase == Phase.PAUSED
    assert persister.decisions("breast-cancer")[-1] is changed


def shadow_window(pairs: int, agreements: int) -> StepStats:
    window = StepStats.fresh()
    window.shadow.pairs, window.shadow.agreements, window.shadow.labelled = (pairs, agreements,
                                                                             True)
    return window


def test_agreement_gate_is_the_e_process_on_disagreements() -> None:
    schedule = RolloutConfig(shadow_percent=100, min_agreement=0.8, alpha=0.03,
                             accuracy_gate=False)
    assert alpha_shares(schedule) == pytest.approx({"errors": 0.01, "latency": 0.01,
                                                    "agreement": 0.01})
    gate, step = agreement_gate(schedule, shadow_window(1000, 700), Carried((0.25,)), 0.01)
    assert step == pytest.approx(exact_log_e(300, 1000, 0.2), rel=1e-9)
    assert gate.statistic == pytest.approx(step + 0.25)
    assert gate.threshold == pytest.approx(math.log(100)) and gate.verdict.value == "fail"
    assert gate.counts["disagreements"] == 300 and gate.counts["agreement_rate"] == 0.7
    gate, _ = agreement_gate(schedule, shadow_window(1000, 810), Carried(), 0.01)
    assert gate.verdict.value == "pass"
    gate, _ = agreement_gate(schedule, shadow_window(10, 0), Carried(), 0.01)
    assert gate.verdict.value == "no_data"


def test_a_corrupt_state_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.json"
    path.write_text('{"breast-cancer": {"phase": "progress')
    with pytest.raises(ConfigError, match=f"{path}.*not valid JSON"):
        FileStateStore(path).load()
    path.write_text(json.dumps({"breast-cancer": {"phase": "sideways"}}))
    with pytest.raises(ConfigError, match=f"{path}.*invalid state"):
        FileStateStore(path).load()
    path.write_text("[]")
    with pytest.raises(ConfigError, match="JSON object"):
        FileStateStore(path).load()


def test_a_state_folder_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"state folder {blocker / 'state'}"):
        FileStateStore(blocker / "state" / "rollouts.json")
    with pytest.raises(ConfigError, match=f"decision log {blocker / 'state'}"):
        Persister(FileStateStore(tmp_path / "rollouts.json"),
                  blocker / "state" / "decisions.jsonl")
    (tmp_path / "log-dir").mkdir()
    with pytest.raises(ConfigError, match="decision log"):
        Persister(FileStateStore(tmp_path / "rollouts.json"), tmp_path / "log-dir")


class StuckStore:
    """A store whose disk never answers (a hung NFS mount), or that always fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.release = threading.Event()

    def load(self) -> dict[str, RolloutState]:
        return {}

    def save(self, state: RolloutState) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.release.wait()

    def load_versions(self) -> dict[str, dict[str, str]]:
        return {}

    def save_version(self, model: str, version: str, path: str) -> None:
        self.save(RolloutState(model=model, baseline=version))


def test_the_persister_cannot_hang_shutdown(tmp_path: Path) -> None:
    stuck = StuckStore()
    persister = Persister(stuck, tmp_path / "d.jsonl")
    persister.save(RolloutState(model="m", baseline="1"))
    started = time.monotonic()
    assert persister.flush(timeout=0.2) is False
    persister.close(timeout=0.2)
    assert time.monotonic() - started < 2
    stuck.release.set()


def test_a_failed_write_does_not_stop_the_persister(tmp_path: Path) -> None:
    persister = Persister(StuckStore(fail=True), tmp_path / "d.jsonl")
    persister.save(RolloutState(model="m", baseline="1"))
    persister.record({"model": "m", "action": "hold"})
    assert persister.flush(timeout=5) is True
    persister.close()
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["hold"]


def test_decision_log_lines_without_a_model_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"model": "m", "action": "start"}\n[1, 2]\n{"action": "x"}\n{"mod')
    persister = Persister(StuckStore(), path)
    persister.load_decisions()
    persister.close(timeout=0.1)
    assert persister.decisions("m") == [{"model": "m", "action": "start"}]


def test_the_decision_log_is_bounded_on_disk(tmp_path: Path) -> None:
    """Issue 11, finding 4: the log rotates past its size; one older file is kept."""
    log = tmp_path / "decisions.jsonl"
    persister = Persister(FileStateStore(tmp_path / "rollouts.json"), log, max_log_bytes=4000)
    for i in range(500):
        persister.record({"model": "m", "action": "hold", "reason": "x" * 50, "n": i})
    persister.close()
    older = tmp_path / "decisions.jsonl.1"
    assert older.is_file() and log.stat().st_size <= 4000 + 200
    assert older.stat().st_size <= 4000 + 200
    last = [json.loads(line)["n"] for line in log.read_text().splitlines()]
    assert last[-1] == 499 and persister.decisions("m")[-1]["n"] == 499
