"""Per-variant latency and throughput statistics, checked against numpy on the same data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canarygate.stats import LogHistogram
from canarygate.stats.live import MAX_SET_ASIDE, LiveStats, VariantStats, describe
from conftest import ADMIN_TOKEN, AUTH, MODELS, v2_body

RNG = np.random.default_rng(11)
LATENCIES = RNG.lognormal(np.log(0.004), 0.7, 20_000)  # seconds: median 4 ms, a long tail


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
def test_quantiles_within_one_percent_of_the_exact_order_statistic(q: float) -> None:
    hist = LogHistogram(0.01)
    for x in LATENCIES:
        hist.add(float(x))
    exact = np.sort(LATENCIES)[int(q * (len(LATENCIES) - 1))]
    got = hist.quantile(q)
    assert got is not None and abs(got - exact) <= 0.01 * exact
    assert hist.sum == pytest.approx(LATENCIES.sum(), rel=1e-9)


def test_all_quantiles_in_one_pass_match_the_exact_order_statistics() -> None:
    """``quantiles`` (one pass, what the summaries use) against numpy's order statistics,
    with zeros mixed in and on a histogram small enough that ranks fall between buckets."""
    qs = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
    for n in (1, 7, 300, 20_000):
        values = np.concatenate([LATENCIES[:n], np.zeros(n // 5)])
        hist = LogHistogram(0.01)
        for x in values:
            hist.add(float(x))
        ordered = np.sort(values)
        for q, got in zip(qs, hist.quantiles(qs), strict=True):
            exact = ordered[int(q * (len(values) - 1))]
            assert got is not None and abs(got - exact) <= 0.01 * exact, (n, q)
    assert LogHistogram().quantiles(qs) == [None] * len(qs)


def test_cumulative_buckets_bracket_numpy_counts() -> None:
    hist = LogHistogram(0.01)
    for x in LATENCIES:
        hist.add(float(x))
    bounds = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
    for bound, got in zip(bounds, hist.cumulative(bounds), strict=True):
        low, high = (np.count_nonzero(np.less_equal(LATENCIES, bound * f)) for f in (0.99, 1.01))
        assert low <= got <= high


def feed(stats: VariantStats, times: np.ndarray, latencies: np.ndarray,
         statuses: np.ndarray) -> None:
    for t, x, s in zip(times, latencies, statuses, strict=True):
        stats.record(float(t), float(x), int(s), 1, 0.0001, float(x) / 2, 8)


def test_the_window_holds_the_last_minute_and_nothing_is_lost() -> None:
    # 3 minutes of traffic at 50 requests a second, 2 % server errors, 1 % client errors.
    times = np.arange(0, 180, 0.02)
    latencies = RNG.lognormal(np.log(0.004), 0.5, times.size)
    statuses = RNG.choice([200, 500, 400], times.size, p=[0.97, 0.02, 0.01])
    stats = VariantStats(0.0, width=5.0, slots=12)
    feed(stats, times, latencies, statuses)
    now = float(times[-1])
    slot, covered = stats.last(now, 60.0)
    start = 5.0 * np.floor((now - 60) / 5.0 + 1)  # the oldest sub-window that started since
    recent = times >= start
    assert slot.requests == recent.sum()
    assert covered == pytest.approx(now - start)
    figures = describe(slot, covered)
    assert figures["qps"] == pytest.approx(recent.sum() / (now - start))
    assert figures["error_rate"] == pytest.approx((statuses[recent] == 500).mean())
    assert figures["client_error_rate"] == pytest.approx((statuses[recent] == 400).mean())
    ok = recent & (statuses == 200)
    exact = np.sort(latencies[ok])[int(0.99 * (ok.sum() - 1))]
    assert figures["total_ms"]["p99"] == pytest.approx(exact * 1000, rel=0.011)
    assert figures["mean_batch_rows"] == 8
    # Totals (what /metrics exports) keep every request, whatever rotated out of the ring.
    totals = stats.totals()
    assert totals.requests == times.size
    assert totals.total.count == (statuses == 200).sum()
    assert totals.server_errors == (statuses == 500).sum()


def test_a_quiet_gap_empties_the_window() -> None:
    stats = VariantStats(0.0, width=5.0, slots=12)
    feed(stats, np.arange(0, 10, 0.1), np.full(100, 0.002), np.full(100, 200))
    slot, _ = stats.last(500.0, 60.0)  # eight minutes later
    assert slot.requests == 0 and describe(slot, 60.0)["total_ms"]["p50"] is None
    stats.record(500.0, 0.003, 200, 1, None, None, 0)
    slot, covered = stats.last(500.5, 60.0)
    assert slot.requests == 1 and covered == pytest.approx(55.5)  # sub-windows 445-500.5 s
    assert stats.totals().requests == 101


def test_set_aside_sub_windows_are_folded_on_the_request_path_when_nobody_reads() -> None:
    stats = VariantStats(0.0, width=1.0, slots=4)
    for t in range(MAX_SET_ASIDE * 3):
        stats.record(float(t), 0.001, 200, 1, None, None, 0)
    assert len(stats.set_aside) <= MAX_SET_ASIDE
    assert stats.totals().requests == MAX_SET_ASIDE * 3


def test_summary_lists_each_version_and_variant_of_a_model() -> None:
    live = LiveStats()
    for key in (("m", "1", "baseline"), ("m", "2", "candidate"), ("other", "1", "baseline")):
        live.get(*key, now=0.0).record(1.0, 0.002, 200, 3, 0.0001, 0.001, 6)
    summary = live.summary("m", now=2.0)
    assert sorted((v["version"], v["variant"]) for v in summary["variants"]) == [
        ("1", "baseline"), ("2", "candidate")]
    assert all(v["requests"] == 1 and v["rows_per_second"] == 1.5
               for v in summary["variants"])


def test_stats_and_latency_histograms_on_a_real_server(
    launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp_path / "state"}
dataset: {{enabled: false}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "2": {{path: breast-cancer/2}}}}
    baseline: "1"
""")
    server = launch(config, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    with server.client() as http:
        for i in range(60):
            assert http.post("/v2/models/breast-cancer/infer",
                             json=v2_body(breast_cancer_rows[i:i + 2])).status_code == 200
        for i in range(25):
            assert http.post("/v2/models/breast-cancer/versions/2/infer",
                             json=v2_body(breast_cancer_rows[i:i + 1])).status_code == 200
        # A bad request is no version's, routed or pinned: its answer names none.
        http.post("/v2/models/breast-cancer/infer", content=b"{")
        http.post("/v2/models/breast-cancer/versions/2/infer", content=b"{")
        stats = http.get("/admin/stats/breast-cancer", headers=AUTH).json()
        bad = http.get("/admin/stats/breast-cancer?seconds=0", headers=AUTH)
        unknown = http.get("/admin/stats/nope", headers=AUTH)
    variants = {(v["version"], v["variant"]): v for v in stats["variants"]}
    base, pinned = variants[("1", "baseline")], variants[("2", "pinned")]
    assert (base["requests"], pinned["requests"]) == (60, 25)
    assert base["client_error_rate"] == 0 and base["error_rate"] == 0
    assert set(variants) == {("1", "baseline"), ("2", "pinned")}
    assert base["rows_per_second"] * base["covered_seconds"] == pytest.approx(120)
    assert 0 < base["total_ms"]["p50"] <= base["total_ms"]["p99"]
    assert base["inference_ms"]["p50"] is not None and base["queue_ms"]["p50"] is not None
    assert bad.status_code == 400 and "seconds" in bad.json()["error"]
    assert unknown.status_code == 404
    # The Prometheus histograms count the same successful requests.
    assert server.metric("canarygate_request_duration_seconds_count", model="breast-cancer",
                         version="1", variant="baseline") == 60
    assert server.metric("canarygate_inference_duration_seconds_count", version="2") == 25


def test_step_counts_of_two_workers_merge_to_those_of_one() -> None:
    """Each worker ships a cumulative snapshot of its step's counts; merging the snapshots
    gives what one process would have counted seeing every request."""
    from canarygate.stats import StepStats

    rng = np.random.default_rng(3)
    one, a, b = StepStats.fresh(0.01), StepStats.fresh(0.01), StepStats.fresh(0.01)
    for i in range(2000):
        worker = a if i % 3 else b
        variant = "candidate" if rng.random() < 0.3 else "baseline"
        seconds, error, keyed = float(rng.lognormal(-6, 1)), rng.random() < 0.02, i % 5 == 0
        output = float(i % 7 == 0)
        for stats in (one, worker):
            getattr(stats, variant).record(seconds, error, keyed, output)
            if i % 10 == 0:
                getattr(stats, variant).label(True, [float(error)])
        for stats in (one, worker):
            stats.shadow.pairs += 1
    shipped = [StepStats.from_json(json.loads(json.dumps(s.to_json()))) for s in (a, b)]
    merged = StepStats.fresh(0.01).merged(shipped)
    for variant in ("baseline", "candidate"):
        mine, theirs = getattr(merged, variant), getattr(one, variant)
        assert mine.counters() == theirs.counters()
        assert (mine.keyed, mine.labelled, mine.wrong, mine.varied) == (
            theirs.keyed, theirs.labelled, theirs.wrong, theirs.varied)
        assert mine.latency.buckets == theirs.latency.buckets
        assert mine.latency.quantile(0.95) == theirs.latency.quantile(0.95)
    assert merged.shadow.pairs == one.shadow.pairs == 2000
