"""Our DDM, EDDM, ADWIN and Page-Hinkley against river 0.26.1 (the oracle, test-only): the same
stream must give the same drift (and warning) indices, and ADWIN the same window."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from river import drift as rdrift

from canarygate.drift.detectors import ADWIN, DDM, EDDM, Detector, PageHinkley

Stream = list[float]
Pair = tuple[Callable[[], Any], Callable[[], Any]]  # (ours, river's), both fresh each call


def trace(detector: Any, stream: Sequence[float]) -> tuple[list[int], list[int]]:
    """Indices where drift_detected / warning_detected are set after the update."""
    drifts, warnings = [], []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            drifts.append(i)
        if getattr(detector, "warning_detected", False):
            warnings.append(i)
    return drifts, warnings


# --- streams ------------------------------------------------------------------------------


def bernoulli(seed: int, rates: Sequence[float], seg: int) -> Stream:
    rng = np.random.default_rng(seed)
    p = np.repeat(np.asarray(rates), seg)
    return (rng.random(p.size) < p).astype(int).tolist()  # type: ignore[no-any-return]


def gaussian_shifts(seed: int, n_seg: int = 8, seg: int = 2500) -> Stream:
    rng = np.random.default_rng(seed)
    means = np.repeat(rng.normal(0.0, 1.0, n_seg), seg)
    return (means + rng.normal(0.0, 1.0, means.size)).tolist()  # type: ignore[no-any-return]


def latency_z(seed: int, factors: Sequence[float] = (1.0, 1.2, 1.0, 1.5, 1.1), seg: int = 4000
              ) -> Stream:
    """Log-normal latencies (ms) whose scale steps by `factors`, z-scored on the log scale with
    the mean/std of the first 4000 requests, as the gateway does (research §6.3)."""
    rng = np.random.default_rng(seed)
    lat = np.repeat(np.asarray(factors) * 20.0, seg) * rng.lognormal(0.0, 0.4, seg * len(factors))
    log = np.log(lat)
    return ((log - log[:seg].mean()) / log[:seg].std()).tolist()  # type: ignore[no-any-return]


def docstring_bits() -> list[int]:
    """river's DDM/EDDM docstring stream: 1000 x Bern(0.5) then 1000 x Bern(0.7), seed 42."""
    rng = random.Random(42)
    return rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])


def docstring_levels() -> list[int]:
    """river's ADWIN/PH docstring stream: 1000 x {0, 1} then 1000 x {4..7}, seed 12345."""
    rng = random.Random(12345)
    return rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)


# --- detector pairs -----------------------------------------------------------------------

PH_LATENCY: dict[str, Any] = {"alpha": 1.0, "delta": 0.25, "threshold": 25.0, "mode": "up"}
PAIRS: dict[str, Pair] = {
    "ddm": (DDM, rdrift.binary.DDM),
    "ddm_tight": (lambda: DDM(50, 1.5, 2.5), lambda: rdrift.binary.DDM(50, 1.5, 2.5)),
    "eddm": (EDDM, rdrift.binary.EDDM),
    "eddm_calm": (lambda: EDDM(alpha=0.8, beta=0.75),
                  lambda: rdrift.binary.EDDM(alpha=0.8, beta=0.75)),
    "adwin": (ADWIN, rdrift.ADWIN),
    "adwin_fast": (lambda: ADWIN(delta=0.05, clock=1, min_window_length=10),
                   lambda: rdrift.ADWIN(delta=0.05, clock=1, min_window_length=10)),
    "ph": (PageHinkley, rdrift.PageHinkley),
    "ph_latency": (lambda: PageHinkley(**PH_LATENCY), lambda: rdrift.PageHinkley(**PH_LATENCY)),
    "ph_down": (lambda: PageHinkley(threshold=20.0, alpha=1.0, mode="down"),
                lambda: rdrift.PageHinkley(threshold=20.0, alpha=1.0, mode="down")),
}


def _steps(seed: int) -> Stream:
    return bernoulli(seed, [0.1, 0.3, 0.1, 0.45, 0.05, 0.25], 2000)


# (pair, stream, must the oracle detect at least once?)
CASES: list[tuple[str, Callable[[int], Stream], bool]] = [
    ("ddm", _steps, True),
    ("ddm", lambda s: bernoulli(s, [0.05], 15000), False),
    ("ddm_tight", _steps, True),
    ("eddm", _steps, True),
    ("eddm", lambda s: bernoulli(s, [0.05], 15000), False),
    ("eddm_calm", _steps, True),
    ("adwin", _steps, True),
    ("adwin", lambda s: bernoulli(s, [0.05], 15000), False),
    ("adwin", gaussian_shifts, True),
    ("adwin", latency_z, True),
    ("adwin_fast", gaussian_shifts, True),
    ("ph", gaussian_shifts, True),
    ("ph", _steps, False),
    ("ph", latency_z, False),
    ("ph_latency", latency_z, True),
    ("ph_down", lambda s: [-x for x in latency_z(s)], True),
]
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("pair", "make_stream", "must_detect"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_same_indices_as_river(
    pair: str, make_stream: Callable[[int], Stream], must_detect: bool, seed: int
) -> None:
    stream = make_stream(seed)
    ours_cls, river_cls = PAIRS[pair]
    ours, theirs = ours_cls(), river_cls()
    got, want = trace(ours, stream), trace(theirs, stream)
    assert got == want
    assert ours.n_detections == len(want[0])
    if must_detect:
        assert len(want[0]) >= 2, "stream meant to trigger several detections and resets"


@pytest.mark.parametrize(("build", "stream", "drifts", "first_warning"), [
    (lambda: (DDM(), rdrift.binary.DDM()), docstring_bits, [1334], 1084),
    (lambda: (EDDM(alpha=0.8, beta=0.75), rdrift.binary.EDDM(alpha=0.8, beta=0.75)),
     docstring_bits, [1278], 1059),
    (lambda: (ADWIN(), rdrift.ADWIN()), docstring_levels, [1023], None),
    (lambda: (PageHinkley(), rdrift.PageHinkley()), docstring_levels, [1006], None),
], ids=["ddm", "eddm", "adwin", "page_hinkley"])
def test_docstring_examples(
    build: Callable[[], tuple[Detector, Any]], stream: Callable[[], list[int]],
    drifts: list[int], first_warning: int | None,
) -> None:
    ours, theirs = build()
    data = stream()
    got, want = trace(ours, data), trace(theirs, data)
    assert got == want
    assert got[0] == drifts  # the indices river's docstrings print
    if first_warning is not None:
        assert got[1][0] == first_warning


@pytest.mark.parametrize(("pair", "stream", "drifts"), [
    # The first check happens once n > warm_start (DDM) / n >= min_instances (PH).
    ("ddm", [0] * 31 + [1] * 9, [31]),
    ("ddm", [False] * 40 + [True] * 3, [40]),
    ("ph_down", [0.0] * 10 + [-30.0] * 30, [29]),
    ("ph", [0.0] * 20 + [10.0] * 20 + [0.0] * 60, [29, 59]),
    # Errors every 3rd sample: the first distance is 1 (counted from before the stream), so the
    # spread shrinks as 3s accumulate and the level decays below beta before the burst.
    ("eddm", [1, 0, 0] * 40 + [1] * 40, [102, 145]),
    # A constant window (zero variance) then a jump.
    ("adwin", [3.0] * 100 + [4.0] * 60, [127]),
], ids=["ddm-31", "ddm-bool", "ph-min-instances", "ph-twice", "eddm-periodic", "adwin-const"])
def test_edge_streams(pair: str, stream: list[float], drifts: list[int]) -> None:
    ours_cls, river_cls = PAIRS[pair]
    got, want = trace(ours_cls(), stream), trace(river_cls(), stream)
    assert got == want
    assert got[0] == drifts


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make_stream", [gaussian_shifts, latency_z, _steps],
                         ids=["gauss", "latency", "bernoulli"])
def test_adwin_window_matches_river(make_stream: Callable[[int], Stream], seed: int) -> None:
    ours, theirs = ADWIN(), rdrift.ADWIN()
    checked = 0
    for i, x in enumerate(make_stream(seed)):
        ours.update(x)
        theirs.update(x)
        assert ours.drift_detected == theirs.drift_detected, i
        if i % 97 == 0 or ours.drift_detected:
            checked += 1
            assert ours.width == theirs.width, i
            assert ours.estimation == pytest.approx(theirs.estimation, abs=1e-9), i
            # river's `variance` is the sum of squared deviations; ours divides by the width.
            assert ours.variance * ours.width == pytest.approx(theirs.variance, rel=1e-9), i
    assert checked > 100


def test_lazy_reset_and_counters() -> None:
    det = PageHinkley()
    drifts = trace(det, docstring_levels())[0]
    det2 = PageHinkley()
    for x in docstring_levels()[: drifts[0] + 1]:
        det2.update(x)
    # The state that raised the alarm stays readable until the next update clears it.
    before = det2.state()
    assert det2.drift_detected and before["samples"] == drifts[0] + 1
    assert not det2.update(0.0)
    assert det2.state()["samples"] == 1 and det2.n_detections == 1

    adwin = ADWIN()
    stream = gaussian_shifts(3)
    n = len(trace(adwin, stream)[0])
    assert n >= 2 and adwin.n_detections == n  # since creation (river's own count restarts)
    assert adwin.state()["samples_seen"] == len(stream)


@pytest.mark.parametrize(("cls", "name"), [(DDM, "ddm"), (EDDM, "eddm"), (ADWIN, "adwin"),
                                           (PageHinkley, "page_hinkley")])
def test_every_detector_starts_clean_and_reports_its_state(cls: type[Detector],
                                                           name: str) -> None:
    det = cls()
    assert det.name == name
    assert not det.drift_detected and not det.warning_detected and det.n_detections == 0
    json.dumps(det.state(), allow_nan=False)
    for x in _steps(4):
        det.update(x)
        if name in ("adwin", "page_hinkley"):
            assert det.warning_detected is False
    state = det.state()
    json.dumps(state, allow_nan=False)
    assert state["name"] == name and state["n_detections"] == det.n_detections


@pytest.mark.parametrize(("cls", "kwargs", "arg"), [
    (DDM, {"warm_start": -1}, "warm_start"),
    (DDM, {"warm_start": 2.5}, "warm_start"),
    (DDM, {"warning_threshold": 0.0}, "warning_threshold"),
    (DDM, {"drift_threshold": 1.0}, "drift_threshold"),
    (DDM, {"drift_threshold": math.nan}, "drift_threshold"),
    (EDDM, {"alpha": 0.8, "beta": 0.9}, "alpha"),
    (EDDM, {"beta": 0.0}, "beta"),
    (EDDM, {"alpha": 1.5}, "alpha"),
    (ADWIN, {"delta": 0.0}, "delta"),
    (ADWIN, {"delta": 1.0}, "delta"),
    (ADWIN, {"clock": 0}, "clock"),
    (ADWIN, {"max_buckets": 0}, "max_buckets"),
    (ADWIN, {"min_window_length": 0}, "min_window_length"),
    (ADWIN, {"grace_period": -1}, "grace_period"),
    (PageHinkley, {"min_instances": 0}, "min_instances"),
    (PageHinkley, {"delta": -0.1}, "delta"),
    (PageHinkley, {"threshold": 0}, "threshold"),
    (PageHinkley, {"alpha": 1.01}, "alpha"),
    (PageHinkley, {"mode": "sideways"}, "mode"),
])
def test_invalid_arguments(cls: type[Any], kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        cls(**kwargs)
