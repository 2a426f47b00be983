"""The router alone: a pure function of the routing table and the request."""

from __future__ import annotations

import random

import numpy as np
import pytest

from canarygate.router import BUCKETS, Routing, bucket, to_candidate
from canarygate.runtime import ModelVersion
from conftest import MODELS


@pytest.fixture(scope="module")
def versions() -> tuple[ModelVersion, ModelVersion]:
    return (ModelVersion.load("m", "1", MODELS / "breast-cancer" / "1"),
            ModelVersion.load("m", "2", MODELS / "breast-cancer" / "2"))


def test_unkeyed_share_at_25_percent(versions: tuple[ModelVersion, ModelVersion]) -> None:
    routing = Routing(*versions, weight=25, salt=b"m")
    rng = random.Random(7)
    share = sum(to_candidate(routing, None, rng.random()) for _ in range(20_000)) / 20_000
    assert abs(share - 0.25) < 0.01


def test_sticky_keys_are_stable_and_monotone(versions: tuple[ModelVersion, ModelVersion]) -> None:
    keys = [f"user-{i}".encode() for i in range(5000)]
    on = {}
    for weight in (0.5, 1, 5, 25, 50, 100):
        routing = Routing(*versions, weight=weight, salt=b"m")
        now = {k for k in keys if to_candidate(routing, k, 0.99)}
        assert on.get("last", set()) <= now  # raising the weight keeps every candidate key
        assert abs(len(now) / len(keys) - weight / 100) < 0.03
        on["last"] = now
    assert not any(to_candidate(Routing(*versions, weight=0, salt=b"m"), k, 0.0) for k in keys)


def test_buckets_are_uniform_and_salted() -> None:
    counts = np.bincount([bucket(b"m", f"k{i}".encode()) // 1000 for i in range(50_000)],
                         minlength=BUCKETS // 1000)
    assert counts.min() > 4500 and counts.max() < 5500
    assert bucket(b"model-a", b"k") != bucket(b"model-b", b"k") or \
        bucket(b"model-a", b"k2") != bucket(b"model-b", b"k2")


def test_no_candidate_means_baseline(versions: tuple[ModelVersion, ModelVersion]) -> None:
    routing = Routing(versions[0], None, weight=50)
    assert not to_candidate(routing, None, 0.0)
