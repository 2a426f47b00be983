"""The sequential monitor feeds each stream to its detectors as river would see it."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from canarygate.config import DetectorsConfig
from canarygate.drift.sequential import SequentialMonitor, Standardiser
from canarygate.stats.sampling import Stride
from conftest import FakeClock

RNG = np.random.default_rng(21)


def river_indices(detector: object, values: np.ndarray) -> list[int]:
    found = []
    for i, x in enumerate(values):
        detector.update(float(x))  # type: ignore[attr-defined]
        if detector.drift_detected:  # type: ignore[attr-defined]
            found.append(i)
    return found


def drift_indices(events: list[dict[str, object]], name: str) -> list[int]:
    return [int(e["index"]) for e in events  # type: ignore[call-overload]
            if e["detector"] == name and e["kind"] == "drift"]


def test_standardiser_takes_mean_and_spread_from_the_first_values() -> None:
    values = RNG.lognormal(np.log(0.004), 0.4, 700)
    scale = Standardiser(500, log=True)
    out = [scale(float(v)) for v in values]
    assert out[:500] == [None] * 500
    logs = np.log(values)
    want = (logs[500:] - logs[:500].mean()) / logs[:500].std(ddof=1)
    np.testing.assert_allclose(np.array(out[500:], dtype=float), want, rtol=1e-9)


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_latency_stream_matches_river_on_the_standardised_log_latency(factor: float) -> None:
    calibration = 2000
    base = RNG.lognormal(np.log(0.004), 0.3, 6000)
    after = RNG.lognormal(np.log(0.004 * factor), 0.3, 3000)
    latencies = np.concatenate([base, after])
    monitor = SequentialMonitor(DetectorsConfig(latency_calibration=calibration,
                                                max_latencies_per_second=1e12), keep=10_000)
    for x in latencies:
        monitor.observe_latency("m", "1", float(x))
    monitor.tick(now=0.0)
    stream = monitor.stream("m", "1", "latency")
    assert stream is not None and stream.fed == latencies.size - calibration
    logs = np.log(latencies)
    z = (logs[calibration:] - logs[:calibration].mean()) / logs[:calibration].std(ddof=1)
    events = list(stream.events)
    assert drift_indices(events, "adwin") == river_indices(drift.ADWIN(delta=0.002), z)
    ph = drift.PageHinkley(min_instances=30, delta=0.25, threshold=25.0, alpha=1.0, mode="up")
    assert drift_indices(events, "page_hinkley") == river_indices(ph, z)
    found = drift_indices(events, "adwin") + drift_indices(events, "page_hinkley")
    if factor == 1.0:
        assert found == []
    else:  # found soon after the shift, which starts at index 4000 of the fed stream
        assert found and 4000 <= min(found) < 4300


def test_error_stream_of_a_classifier_matches_river() -> None:
    errors = np.concatenate([RNG.random(3000) < 0.05, RNG.random(3000) < 0.15]).astype(float)
    monitor = SequentialMonitor(DetectorsConfig(), keep=10_000)
    monitor.observe_errors("m", "2", True, errors.tolist(), now=0.0)
    stream = monitor.stream("m", "2", "errors")
    assert stream is not None
    events = list(stream.events)
    for name, oracle in (("adwin", drift.ADWIN(delta=0.002)), ("ddm", drift.binary.DDM()),
                         ("eddm", drift.binary.EDDM())):
        assert drift_indices(events, name) == river_indices(oracle, errors), name
    assert any(3000 <= i < 3600 for i in drift_indices(events, "adwin"))
    state = monitor.state("m")["2"]["errors"]
    assert [d["name"] for d in state["detectors"]] == ["adwin", "ddm", "eddm"]


def test_versions_have_their_own_detectors() -> None:
    monitor = SequentialMonitor(DetectorsConfig(latency_calibration=10))
    for _ in range(50):
        monitor.observe_latency("m", "1", 0.002)
    monitor.observe_latency("m", "2", 0.002)
    monitor.tick(now=0.0)
    one, two = monitor.stream("m", "1", "latency"), monitor.stream("m", "2", "latency")
    assert one is not None and two is not None
    assert (one.seen, two.seen) == (50, 1)
    assert set(monitor.state("m")) == {"1", "2"} and monitor.state("other") == {}


def test_a_busy_stream_is_sampled_on_the_request_path() -> None:
    monitor = SequentialMonitor(DetectorsConfig(max_latencies_per_second=100))
    clock = FakeClock()
    monitor.stride = Stride(monitor.stride.per_second, monitor.stride.check_every, clock)
    for _ in range(6000):  # 1,024 a second: about 10 times the 100 allowed
        clock.now += 1 / 1024
        monitor.observe_latency("m", "1", 0.002)
    # The stride is set from the rate every 256 latencies: the first 255 are kept, then every
    # 11th (1,024 / 100, rounded up), and every one is either kept or counted as left out.
    assert monitor.stride.every == 11
    assert len(monitor.latency_buffer) == 255 + (6000 - 255) // 11
    assert monitor.stride.left_out + len(monitor.latency_buffer) == monitor.stride.arrived == 6000
