"""Drift windows and detector inputs merged across workers (the Redis backend's telemetry,
without Redis: what each worker ships, handed to the reader as the sync would)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from canarygate.config import DetectorsConfig, DriftConfig
from canarygate.drift import DriftMonitor
from canarygate.drift.sequential import SequentialMonitor
from canarygate.rollout.telemetry import keep_share
from canarygate.stats.live import LiveStats
from canarygate.stats.sampling import Stride
from conftest import MODELS, FakeClock, ort_outputs

BC = MODELS / "breast-cancer"
MODEL = "breast-cancer"
T0 = 1_000_000.0  # an interval boundary of 10 s intervals


def drift_monitor(shared: bool) -> DriftMonitor:
    m = DriftMonitor(DriftConfig(interval_seconds=10, window_intervals=3, min_window=100,
                                 max_rows_per_second=1e9))
    for version in ("1", "3"):
        m.add_profile(MODEL, version, BC / version)
    if shared:
        m.share(T0)
    return m


def observe(m: DriftMonitor, x: np.ndarray) -> None:
    m.observe(MODEL, "1", "baseline", {"input": x}, ort_outputs(MODEL, "1", x))
    m.observe(MODEL, "3", "candidate", {"input": x}, ort_outputs(MODEL, "3", x))


def columns(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for v in report["variants"]:
        for c in v["features"] + v["outputs"]:
            out[(v["version"], v["variant"], c["name"])] = c
    for c in report["output_comparison"]["outputs"]:
        out[("compared", "", c["name"])] = c
    return out


def test_two_workers_drift_is_one_process_drift() -> None:
    """Rows split over two workers, shipped as snapshots and added up on a third, give the
    report one process gets from all the rows; a worker's own share gives another."""
    x = load_breast_cancer().data.astype(np.float32)
    shifted = x.copy()
    shifted[:, :5] *= 1.3  # the second worker's rows drift
    single, a, b, reader = (drift_monitor(False), drift_monitor(True), drift_monitor(True),
                            drift_monitor(True))
    observe(single, x)
    observe(single, shifted)
    single.tick(T0 + 5)
    observe(a, x)
    a.bin(T0 + 2)
    observe(b, shifted[:300])
    b.bin(T0 + 3)  # a snapshot of the open interval ...
    observe(b, shifted[300:])
    b.bin(T0 + 4)  # ... replaced by a newer one of the same interval (nothing counts twice)
    b.bin(T0 + 11)  # the interval is over: its last snapshot, and a new interval opens
    k = int(T0 // 10)
    reader.arrived.append((k, [a.snapshots[k], b.snapshots[k]]))
    reader.bin(T0 + 12)
    merged = reader.reports[MODEL].as_json()
    expected = single.reports[MODEL].as_json()
    assert [v["window_rows"] for v in merged["variants"]] == [
        v["window_rows"] for v in expected["variants"]] == [2 * len(x)] * 2
    ours, theirs = columns(merged), columns(expected)
    assert ours.keys() == theirs.keys()
    for key, column in theirs.items():
        assert ours[key]["window_size"] == column["window_size"], key
        assert ours[key]["level"] == column["level"], key
        for score in ("psi", "p_value", "js_distance"):
            if score in column:
                assert ours[key][score] == pytest.approx(column[score], rel=1e-9), key
    assert merged["variants"][0]["state"] == "alert"  # the drift one worker saw shows
    alone = drift_monitor(False)
    observe(alone, x)
    alone.tick(T0)
    assert alone.reports[MODEL].as_json()["variants"][0]["state"] != "alert"


def shared_detectors(config: DetectorsConfig, leading: bool = False) -> SequentialMonitor:
    m = SequentialMonitor(config)
    m.share()
    m.lead(leading)
    return m


def test_merged_errors_feed_one_detector_as_one_process_would() -> None:
    """Labels that arrive at two workers reach the controller's detectors in the order the
    batches came, each once: its detectors end in the very state of one process fed the
    same sequence, and the workers run none of their own."""
    rng = np.random.default_rng(3)
    config = DetectorsConfig()
    a, b, controller = (shared_detectors(config), shared_detectors(config),
                        shared_detectors(config, leading=True))
    single = SequentialMonitor(config)
    for second in range(60):
        now = T0 + second
        rate = 0.1 if second < 40 else 0.4  # the candidate gets worse at 40 s
        errs_a = (rng.random(40) < rate).astype(float).tolist()
        errs_b = (rng.random(25) < rate).astype(float).tolist()
        a.observe_errors(MODEL, "2", True, errs_a, now)
        b.observe_errors(MODEL, "2", True, errs_b, now)
        single.observe_errors(MODEL, "2", True, errs_a, now)
        single.observe_errors(MODEL, "2", True, errs_b, now)
        a.tick(now)
        b.tick(now)
        batches = [a.outbox.popleft(), b.outbox.popleft()]
        controller.inbox.append((batches, 1.0))
        controller.tick(now)
    assert a.streams == {} and b.streams == {}
    ours, theirs = controller.state(MODEL), single.state(MODEL)
    assert ours["2"]["errors"]["values"] == 60 * 65
    assert ours == theirs
    assert any(e["kind"] == "drift" for e in ours["2"]["errors"]["events"])
    a.published = {MODEL: ours}
    assert a.state(MODEL) == ours  # a follower shows the controller's
    controller.lead(False)  # the lease passed on: its detectors go (counted once, elsewhere)
    controller.tick(T0 + 61)
    assert controller.streams == {} and controller.state(MODEL) == {}


SECONDS = 60


def latency_run(workers: int, merged: bool, seconds: int = SECONDS, per_worker: int = 300,
                seed: int = 0) -> tuple[int, int]:
    """A stationary candidate's latencies on ``workers`` workers, each seeing ``per_worker``
    a second: (values the detectors saw, drifts they raised), over every detector that runs.
    Unmerged, each worker runs its own detectors (as before the merge)."""
    rng = np.random.default_rng(seed)
    config = DetectorsConfig(max_latencies_per_second=200, latency_calibration=500,
                             adwin_delta=0.5, ph_threshold=8.0)
    clock = FakeClock(T0)
    monitors = [shared_detectors(config) if merged else SequentialMonitor(config)
                for _ in range(workers)]
    for m in monitors:
        m.stride = Stride(config.max_latencies_per_second, 256, clock=clock)
    controller = shared_detectors(config, leading=True)
    for _ in range(seconds):
        for step in range(per_worker):
            clock.now += 1 / per_worker
            for m in monitors:
                m.observe_latency(MODEL, "2", float(rng.lognormal(-5, 0.3)))
            del step
        batches = []
        for m in monitors:
            m.tick(clock.now)
            batches.extend(m.outbox)
            m.outbox.clear()
        if merged:
            controller.inbox.append((batches, keep_share(batches, 200, 1.0)))
            controller.tick(clock.now)
    running = [controller] if merged else monitors
    streams = [m.stream(MODEL, "2", "latency") for m in running]
    return (sum(s.seen for s in streams if s is not None),
            sum(d.n_detections for s in streams if s is not None for d in s.detectors))


def test_a_stationary_candidate_on_two_workers_alarms_no_more_than_on_one() -> None:
    """One process thins its latencies to ``max_latencies_per_second``; two workers that
    share a gateway feed the controller's detectors about as many in all, so an identical
    candidate raises about as many (false) alarms however many workers serve it. Each
    worker running its own detectors (before the merge) saw twice the values and raised
    more."""
    one = [latency_run(1, merged=False, per_worker=600, seed=s) for s in range(4)]
    two = [latency_run(2, merged=True, seed=s) for s in range(4)]
    apart = [latency_run(2, merged=False, seed=s) for s in range(4)]
    fed_one, fed_two, fed_apart = (sum(f for f, _ in runs) for runs in (one, two, apart))
    alarms_one, alarms_two, alarms_apart = (sum(a for _, a in runs) for runs in (one, two,
                                                                                apart))
    print(f"\n[detectors] fed/alarms: one process {fed_one}/{alarms_one}, two merged "
          f"{fed_two}/{alarms_two}, two apart {fed_apart}/{alarms_apart}")
    allowed = 4 * 200 * SECONDS  # max_latencies_per_second over the four runs
    # (A stride keeps every value until its first measure of the rate: 256 of them.)
    assert fed_one <= allowed + 4 * 256 and fed_two <= allowed * 1.01
    assert fed_apart > allowed * 1.2  # each worker its own 200 a second
    assert alarms_one > 10
    # The same false alarms per value fed, and so no more in all than one process.
    assert alarms_two / fed_two <= 1.3 * alarms_one / fed_one
    assert alarms_apart > 1.2 * alarms_two


def test_last_minute_of_two_workers_is_one_process_last_minute() -> None:
    """/admin/stats's merge: one worker's own figures plus the other's shipped snapshot (its
    perf_counter times turned into wall-clock ones) give what one process serving every
    request shows: the same counts, error rates and percentiles."""
    rng = np.random.default_rng(5)
    one, a, b = LiveStats(), LiveStats(), LiveStats()
    start_a, start_b, wall = 100.0, 5_000.0, 1_700_000_000.0  # two unrelated clocks
    for i in range(3000):
        t = i * 0.015  # 45 s of traffic
        seconds, status = float(rng.lognormal(-5, 0.4)), 500 if i % 97 == 0 else 200
        worker, start = (a, start_a) if i % 3 else (b, start_b)
        for live, clock in ((one, t), (worker, start + t)):
            live.get(MODEL, "1", "baseline", clock).record(clock, seconds, status, 1, None,
                                                           None, 1)
    shipped = json.loads(b.snapshot(MODEL, start_b + 45.0, wall + 45.0))
    merged = a.summary(MODEL, start_a + 45.0, 60.0, [shipped], wall + 45.0)
    alone = one.summary(MODEL, 45.0, 60.0)
    ours, theirs = merged["variants"][0], alone["variants"][0]
    assert ours["requests"] == theirs["requests"] == 3000
    assert ours["error_rate"] == pytest.approx(theirs["error_rate"])
    assert ours["total_ms"] == theirs["total_ms"]
    mine = a.summary(MODEL, start_a + 45.0, 60.0)["variants"][0]
    assert mine["requests"] == 2000  # without the other's snapshot: this worker's only
