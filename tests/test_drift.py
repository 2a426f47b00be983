"""Drift statistics against independent references on the same data, and known drift."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from canarygate.config import DriftConfig
from canarygate.drift import DriftMonitor
from canarygate.drift.metrics import (
    benjamini_hochberg,
    categorical,
    divergences,
    ks_and_wasserstein,
)
from conftest import ADMIN_TOKEN, AUTH, MODELS, v2_body

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("seed", range(5))
def test_divergences_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(50, 500, size=10).astype(float)
    cur = rng.integers(0, 300, size=10).astype(float)
    got = divergences(ref, cur)
    p, q = (ref + 0.5) / (ref + 0.5).sum(), (cur + 0.5) / (cur + 0.5).sum()
    assert got["kl"] == pytest.approx(stats.entropy(p, q))
    assert got["psi"] == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p))  # Jeffreys
    rp, rq = ref / ref.sum(), cur / cur.sum()
    assert got["js_distance"] == pytest.approx(distance.jensenshannon(rp, rq, base=2))
    assert got["hellinger"] == pytest.approx(
        np.linalg.norm(np.sqrt(rp) - np.sqrt(rq)) / np.sqrt(2))
    assert got["total_variation"] == pytest.approx(distance.cityblock(rp, rq) / 2)


def test_psi_of_a_known_normal_shift() -> None:
    """Population decile bins of N(0, 1) against N(0.5, 1): the exact binned PSI from the
    normal CDF (scipy.stats.norm), approached by large counts."""
    edges = stats.norm.ppf(np.arange(1, 10) / 10)
    cdf = np.concatenate([[0.0], stats.norm.cdf(edges - 0.5), [1.0]])
    q = np.diff(cdf)
    exact = float(np.sum((q - 0.1) * np.log(q / 0.1)))
    got = divergences(np.full(10, 1e7), q * 1e7)["psi"]
    assert got == pytest.approx(exact, rel=1e-4)


def test_ks_and_wasserstein_against_raw_samples() -> None:
    ref = RNG.normal(0, 1, 20_000)
    cur = RNG.normal(0.3, 1.2, 5_000)
    edges = np.unique(np.percentile(ref, np.arange(1, 100)))
    count = lambda v: np.bincount(np.searchsorted(edges, v, side="right"),  # noqa: E731
                                  minlength=edges.size + 1).astype(float)
    got = ks_and_wasserstein(edges, count(ref), count(cur), float(ref.std()))
    exact = stats.ks_2samp(ref, cur)
    assert got["ks"] <= exact.statistic + 1e-12  # binned D is a lower bound...
    assert got["ks"] == pytest.approx(exact.statistic, abs=0.01)  # ...and a close one
    assert got["ks_p_value"] < 1e-6 and exact.pvalue < 1e-6
    w = stats.wasserstein_distance(ref, cur) / ref.std()
    assert got["wasserstein"] == pytest.approx(w, rel=0.15)  # the tails beyond p1/p99 are cut


def test_categorical_against_a_hand_computed_chi_squared() -> None:
    ref = np.array([300.0, 200.0, 100.0, 0.0])  # the last bin: categories never seen
    cur = np.array([80.0, 90.0, 20.0, 10.0])
    got = categorical(ref, cur)
    table = np.vstack([ref, cur])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    assert got["chi2"] == pytest.approx(chi2)
    assert got["chi2_p_value"] == pytest.approx(stats.chi2.sf(chi2, 3))
    assert got["l_infinity"] == pytest.approx(max(abs(ref / 600 - cur / 200)))
    assert got["unseen_rate"] == pytest.approx(0.05)


def test_benjamini_hochberg_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.5]
    # sorted: .01 .03 .04 .5 -> p*m/rank: .04 .06 .0533 .5 -> running min from the top
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5])


def monitor() -> DriftMonitor:
    m = DriftMonitor(DriftConfig(min_window=500, window_intervals=1))
    m.add_profile("breast-cancer", "1", MODELS / "breast-cancer" / "1")
    return m


def feed(m: DriftMonitor, rows: np.ndarray) -> dict[str, object]:
    m.observe("breast-cancer", "1", "baseline", {"input": rows}, {})
    m.tick(0.0)
    return m.results["breast-cancer"]["variants"][0]  # type: ignore[no-any-return]


def test_known_drift_alerts_on_the_shifted_features_only() -> None:
    reference = np.load(MODELS / "breast-cancer" / "1" / "reference.npz")["inputs"]
    rng = np.random.default_rng(3)
    m = monitor()
    std = reference.std(axis=0)
    shifted = {0, 22}  # mean radius, worst perimeter
    for _ in range(5):
        rows = reference[rng.integers(0, len(reference), 1000)].copy()
        for j in shifted:
            rows[:, j] += 1.0 * std[j]
        result = feed(m, rows)
        alerts = {c["name"] for c in result["features"] if c["level"] == "alert"}  # type: ignore[index]
        assert alerts == {"mean radius", "worst perimeter"}


def test_unshifted_traffic_raises_nothing_over_many_windows() -> None:
    """Windows drawn from the reference sample itself (the bundled data set is too small for
    held-out windows of this size): no warn or alert in 30 windows of 1,000 rows."""
    reference = np.load(MODELS / "breast-cancer" / "1" / "reference.npz")["inputs"]
    rng = np.random.default_rng(4)
    m = monitor()
    for _ in range(30):
        result = feed(m, reference[rng.integers(0, len(reference), 1000)])
        assert result["state"] == "ok", [
            (c["name"], c["level"]) for c in result["features"]  # type: ignore[index]
            if c["level"] != "ok"]


def test_small_windows_are_not_judged() -> None:
    reference = np.load(MODELS / "breast-cancer" / "1" / "reference.npz")["inputs"]
    result = feed(monitor(), reference[:100] * 3)
    assert result["state"] == "window_too_small"
    assert all(c["level"] == "window_too_small" for c in result["features"])  # type: ignore[union-attr]


def test_drift_on_a_real_server(launch: Any, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp_path / "state"}
dataset: {{enabled: false}}
drift: {{interval_seconds: 0.2, window_intervals: 50, min_window: 300}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}}}
    baseline: "1"
""")
    server = launch(config, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    reference = np.load(MODELS / "breast-cancer" / "1" / "reference.npz")["inputs"]
    rows = reference[np.random.default_rng(5).integers(0, len(reference), 600)].copy()
    rows[:, 3] += 1.5 * reference[:, 3].std()  # mean area
    with server.client() as http:
        for start in range(0, 600, 20):  # batches of 20 rows
            r = http.post("/v2/models/breast-cancer/infer", json=v2_body(rows[start:start + 20]))
            assert r.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            drift = http.get("/admin/drift/breast-cancer", headers=AUTH).json()
            if drift["variants"] and drift["variants"][0]["window_rows"] >= 600:
                break
            time.sleep(0.1)
    (variant,) = drift["variants"]
    assert variant["version"] == "1" and variant["variant"] == "baseline"
    assert variant["alerts"] == ["mean area"] and variant["state"] == "alert"
    assert server.metric("canarygate_drift_level", model="breast-cancer",
                         column="mean area") == 2
    assert server.metric("canarygate_drift_level", model="breast-cancer",
                         column="mean radius") == 0
