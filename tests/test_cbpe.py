"""Label-free accuracy estimation (CBPE) against a direct computation of its definition.

The reference is computed here independently: scikit-learn's IsotonicRegression for the
calibration, then the expected accuracy of the calibrated scores (docs/estimation.md). NannyML's
own CBPE is not a dev dependency: see docs/estimation.md for why, and for its figures on the
same data, which equal these to 1e-14.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.isotonic import IsotonicRegression

from canarygate.estimate import AccuracyEstimator, Calibrator
from canarygate.runtime import ModelVersion
from conftest import MODELS, ort_outputs

CLASSIFIERS = ["1", "2", "3", "5"]  # version 4 answers like 1 where it answers at all
TOLERANCE = 1e-9  # float summation order is all that may differ


def uncalibrated_rows(version: str) -> tuple[np.ndarray, np.ndarray]:
    """The breast-cancer rows (and labels) outside the version's calibration split."""
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    with np.load(MODELS / "breast-cancer" / version / "calibration.npz") as cal:
        seen = {row.tobytes() for row in cal["inputs"]}
    keep = np.array([row.tobytes() not in seen for row in x])
    return x[keep], y[keep]


def reference_estimate(version: str, scores: np.ndarray, predicted: np.ndarray) -> float:
    with np.load(MODELS / "breast-cancer" / version / "calibration.npz") as cal:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
            cal["output_probabilities"][:, 1].astype(np.float64), cal["labels"])
    p = iso.predict(scores.astype(np.float64))
    return float(np.where(predicted == 1, p, 1 - p).mean())


@pytest.mark.parametrize("version", CLASSIFIERS)
def test_calibrator_is_isotonic_regression(version: str) -> None:
    with np.load(MODELS / "breast-cancer" / version / "calibration.npz") as cal:
        scores = cal["output_probabilities"][:, 1].astype(np.float64)
        labels = cal["labels"]
    ours = Calibrator.fit(scores, labels)
    theirs = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, labels)
    grid = np.concatenate([np.linspace(-0.1, 1.1, 1201), scores])
    np.testing.assert_allclose(ours(grid), theirs.predict(grid), atol=1e-12)


def test_calibrator_with_ties_and_weights() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 2)  # many ties
    labels = (rng.random(500) < scores**2).astype(np.float64)
    theirs = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, labels)
    np.testing.assert_allclose(Calibrator.fit(scores, labels)(scores), theirs.predict(scores),
                               atol=1e-12)


@pytest.mark.parametrize("version", CLASSIFIERS)
def test_estimate_matches_the_definition(version: str) -> None:
    x, _ = uncalibrated_rows(version)
    out = ort_outputs("breast-cancer", version, x)
    scores, predicted = out["probabilities"][:, 1], out["label"]
    estimator = AccuracyEstimator.from_folder(MODELS / "breast-cancer" / version)
    assert estimator is not None
    # Fed in uneven batches, half of them into a second estimator merged at the end.
    other = estimator.fresh()
    cuts = [0, 1, 40, 41, 200, 333, len(x)]
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        (estimator if i % 2 else other).update_outputs(
            {"label": predicted[lo:hi], "probabilities": out["probabilities"][lo:hi]})
    estimator.merge(other)
    got = estimator.read()
    expected = reference_estimate(version, scores, predicted)
    assert got.rows == len(x)
    assert got.accuracy == pytest.approx(expected, abs=TOLERANCE)
    assert got.expected_wrong == pytest.approx(len(x) * (1 - expected), abs=1e-6)
    assert got.low is not None and got.high is not None
    assert got.low < got.accuracy < got.high
    assert sum(b["rows"] for b in estimator.histogram()) == len(x)


def test_interval_is_the_poisson_binomial_spread() -> None:
    """Given calibrated confidences c, realised accuracy has sd sqrt(sum c(1-c)) / n; the
    interval is 1.96 of them either side, and holds the realised accuracy about 95 % of the
    time when the labels do follow the scores."""
    rng = np.random.default_rng(7)
    identity = Calibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    scores = rng.beta(5, 1, 400)
    predicted = np.ones(400, dtype=np.int64)
    estimator = AccuracyEstimator(identity)
    estimator.update(scores, predicted)
    est = estimator.read()
    sd = np.sqrt((scores * (1 - scores)).sum()) / 400
    assert est.high is not None and est.low is not None
    assert est.high - est.low == pytest.approx(2 * 1.959964 * sd, rel=1e-5)
    realised = (rng.random((2000, 400)) < scores).mean(axis=1)
    covered = ((realised >= est.low) & (realised <= est.high)).mean()
    assert 0.93 <= covered <= 0.97


def test_estimate_follows_a_shifted_feature_before_any_label() -> None:
    """Covariate shift: the traffic moves to where the classes overlap. P(y | x) does not
    change, so calibrated scores stay right and the estimate falls with the realised
    accuracy, without a label."""
    rng = np.random.default_rng(11)

    def traffic(n: int, centre: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.column_stack([rng.normal(centre, spread, n), rng.normal(0, 1, n)])
        truth = 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1])))
        return x, (rng.random(n) < truth).astype(np.int64)

    def model(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Overconfident: twice the true logit, so raw scores need calibrating.
        score = 1 / (1 + np.exp(-(4 * x[:, 0] - 2 * x[:, 1])))
        return score, (score > 0.5).astype(np.int64)

    x_ref, y_ref = traffic(3000, 1.5, 1.5)
    estimator = AccuracyEstimator(Calibrator.fit(model(x_ref)[0], y_ref))
    before, after = estimator.fresh(), estimator.fresh()
    x0, y0 = traffic(5000, 1.5, 1.5)
    x1, y1 = traffic(5000, 0.0, 0.5)
    s0, p0 = model(x0)
    s1, p1 = model(x1)
    before.update(s0, p0)
    after.update(s1, p1)
    e0, e1 = before.read(), after.read()
    a0, a1 = float((p0 == y0).mean()), float((p1 == y1).mean())
    assert e0.accuracy is not None and e1.accuracy is not None
    assert a1 < a0 - 0.1  # the shift costs accuracy
    assert e0.accuracy - e1.accuracy >= 0.8 * (a0 - a1)
    assert abs(e1.accuracy - a1) < 0.02 and abs(e0.accuracy - a0) < 0.02
    # Uncalibrated, the same scores would promise far more than the model delivers.
    raw = float(np.where(p1 == 1, s1, 1 - s1).mean())
    assert raw > a1 + 0.05


def test_demo_model_under_a_shifted_feature() -> None:
    """breast-cancer/3 (flipped labels) on traffic that moved to mid-range worst concave
    points: its accuracy falls, and the estimate falls with it, before any label."""
    x, y = uncalibrated_rows("3")
    names = list(load_breast_cancer().feature_names)
    feature = x[:, names.index("worst concave points")]
    low, high = np.quantile(feature, [0.45, 0.75])
    shifted = (feature >= low) & (feature <= high)
    out = ort_outputs("breast-cancer", "3", x)
    estimator = AccuracyEstimator.from_folder(MODELS / "breast-cancer" / "3")
    assert estimator is not None
    everything, moved = estimator.fresh(), estimator.fresh()
    everything.update(out["probabilities"][:, 1], out["label"])
    moved.update(out["probabilities"][shifted, 1], out["label"][shifted])
    e_all, e_moved = everything.read().accuracy, moved.read().accuracy
    assert e_all is not None and e_moved is not None
    realised_all = float((out["label"] == y).mean())
    realised_moved = float((out["label"][shifted] == y[shifted]).mean())
    assert realised_moved < realised_all - 0.05
    assert e_moved < e_all - 0.05


def test_an_empty_estimator_says_nothing() -> None:
    estimator = AccuracyEstimator(Calibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0])))
    assert estimator.read().accuracy is None
    estimator.update_outputs({"label": np.array([1])})  # no probabilities: ignored
    assert estimator.read().rows == 0
    assert AccuracyEstimator.from_folder(MODELS / "diabetes" / "1") is None
    with pytest.raises(ValueError, match="as many labels"):
        Calibrator.fit(np.array([0.1, 0.2]), np.array([1.0]))


def test_for_a_loaded_version() -> None:
    found = AccuracyEstimator.for_version(
        ModelVersion.load("breast-cancer", "1", MODELS / "breast-cancer" / "1"))
    assert found is not None and (found.label, found.probabilities) == ("label", "probabilities")
    assert AccuracyEstimator.for_version(
        ModelVersion.load("diabetes", "1", MODELS / "diabetes" / "1")) is None
