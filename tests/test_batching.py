"""Micro-batching: concurrent requests share one onnxruntime run and get their own rows back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_slow_model import slow_model

from canarygate.config import BatchingConfig
from canarygate.errors import ModelFailure
from canarygate.runtime import ModelVersion
from canarygate.runtime.batcher import RunCost
from canarygate.runtime.runner import Runner
from conftest import MODELS, Server, ort_outputs, v2_body

WIDE = BatchingConfig(max_rows=64, max_wait_us=20_000)  # 20 ms: every concurrent call joins


def load(model: str, version: str, batching: BatchingConfig | None = WIDE) -> ModelVersion:
    return ModelVersion.load(model, version, MODELS / model / version, batching=batching)


def assert_same_rows(got: np.ndarray, want: np.ndarray) -> None:
    """Exactly equal, except where onnxruntime itself is not batch-invariant: its GEMM gives a
    row computed in a block of rows other low bits than the same row alone
    (test_onnxruntime_itself_is_not_batch_invariant), so linear models' float outputs may move
    by a few parts in a million. A row given to the wrong caller moves by far more."""
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype.kind == "f" and not np.array_equal(got, want):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)


def calls(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, at = [], 0
    for n in sizes:
        out.append(rows[at:at + n])
        at += n
    return out


async def run_all(version: ModelVersion, runner: Runner, parts: list[np.ndarray],
                  timeouts: list[float | None] | None = None) -> list[Any]:
    names = version.output_names
    timeouts = timeouts or [None] * len(parts)
    return await asyncio.gather(
        *(runner.run(version, {"input": p}, names, t) for p, t in zip(parts, timeouts,
                                                                       strict=True)),
        return_exceptions=True)


@pytest.mark.parametrize(("model", "version"), [
    ("breast-cancer", "1"), ("breast-cancer", "2"), ("breast-cancer", "3"),
    ("diabetes", "1"), ("diabetes", "2"),
])
def test_each_caller_gets_its_own_rows(model: str, version: str,
                                       breast_cancer_rows: np.ndarray,
                                       diabetes_rows: np.ndarray) -> None:
    rows = breast_cancer_rows if model == "breast-cancer" else diabetes_rows
    rng = np.random.default_rng(3)
    sizes = [int(n) for n in rng.integers(1, 6, 80)]  # 80 callers, 1-5 rows each
    parts = calls(rows, sizes)
    served = load(model, version)
    runner = Runner(2)
    try:
        results = asyncio.run(run_all(served, runner, parts))
        batcher = runner.batcher(served)
        assert batcher is not None
    finally:
        runner.close()
    # Several batches of up to 64 rows, not one run per caller.
    assert batcher.batches < len(parts) / 4 and batcher.rows == sum(sizes)
    for part, result in zip(parts, results, strict=True):
        want = ort_outputs(model, version, part)  # the caller's rows alone: unbatched
        assert result.batch_rows > part.shape[0]
        for name, got in zip(served.output_names, result.outputs, strict=True):
            assert_same_rows(got, want[name])


def test_onnxruntime_itself_is_not_batch_invariant(breast_cancer_rows: np.ndarray) -> None:
    """Why assert_same_rows allows the last bits of linear models' float outputs to move."""
    rows = breast_cancer_rows[:64]
    together = ort_outputs("breast-cancer", "1", rows)["probabilities"]
    alone = np.concatenate([ort_outputs("breast-cancer", "1", rows[i:i + 1])["probabilities"]
                            for i in range(64)])
    assert not np.array_equal(together, alone)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_a_row_that_breaks_the_model_fails_alone(breast_cancer_rows: np.ndarray) -> None:
    """Version 4 fails at run time when mean radius >= 18; in a batch, only those callers fail."""
    served = load("breast-cancer", "4")
    parts = [breast_cancer_rows[i:i + 1] for i in range(40)]
    bad = [bool(p[0, 0] >= 18) for p in parts]
    assert 0 < sum(bad) < len(bad)
    runner = Runner(1)
    try:
        results = asyncio.run(run_all(served, runner, parts))
        batcher = runner.batcher(served)
        assert batcher is not None and batcher.batches == 1
    finally:
        runner.close()
    for part, result, broken in zip(parts, results, bad, strict=True):
        if broken:
            assert isinstance(result, ModelFailure)
        else:
            want = ort_outputs("breast-cancer", "4", part)
            assert_same_rows(result.outputs[0], want["label"])


def test_timeouts_in_a_batch_fail_only_the_timed_callers(tmp_path: Path) -> None:
    slow_model(tmp_path / "slow" / "1", width=512, layers=16)
    served = ModelVersion.load("slow", "1", tmp_path / "slow" / "1", batching=WIDE)
    parts = [np.ones((16, 30), dtype=np.float32) for _ in range(4)]
    runner = Runner(1)

    async def main() -> tuple[list[Any], list[Any]]:
        # The same batch: two callers allow a microsecond, two wait as long as it takes.
        first = await run_all(served, runner, parts, [1e-6, None, 1e-6, None])
        # The runner's thread is still usable afterwards.
        return first, await run_all(served, runner, parts[:1], [30.0])

    try:
        results, again = asyncio.run(main())
        batcher = runner.batcher(served)
        assert batcher is not None and batcher.batches == 2
    finally:
        runner.close()
    assert [type(r).__name__ for r in results] == ["TimeoutError", "RunResult",
                                                   "TimeoutError", "RunResult"]
    np.testing.assert_array_equal(results[1].outputs[0], again[0].outputs[0])


def test_batching_off_runs_each_request_alone(breast_cancer_rows: np.ndarray) -> None:
    served = load("breast-cancer", "1", BatchingConfig(max_wait_us=0))
    runner = Runner(1)
    try:
        results = asyncio.run(run_all(served, runner, calls(breast_cancer_rows, [1] * 10)))
        assert runner.batcher(served) is None
    finally:
        runner.close()
    assert all(r.batch_rows == 1 for r in results)


def test_concurrent_requests_share_runs_on_a_real_server(
    launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp_path / "state"}
dataset: {{dir: {tmp_path / "dataset"}}}
models:
  - name: breast-cancer
    versions: {{"2": {{path: breast-cancer/2}}}}
    baseline: "2"
    batching: {{max_rows: 32, max_wait_us: 200000, inline_max_us: 1000000}}
""")
    server: Server = launch(config)
    rows = breast_cancer_rows[:200]
    # The warm-up's runs (before ready) are counted too: only this test's traffic is judged.
    warm_batches = server.metric("canarygate_batches_total", model="breast-cancer")
    warm_rows = server.metric("canarygate_batch_rows_total", model="breast-cancer")
    assert warm_batches == 4 and warm_rows == 4 * 8  # server.warmup_runs of warmup_rows
    # A version's first runs go to a thread, timed there; once its cost is known, a run
    # expected under inline_max_us (here, all of them) is made on the event loop.
    assert server.metric("canarygate_batches_on_loop_total", model="breast-cancer") == 0

    async def post_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            return await asyncio.gather(*(
                http.post("/v2/models/breast-cancer/infer", json=v2_body(rows[i:i + 1]))
                for i in range(len(rows))))

    answers = asyncio.run(post_all())
    want = ort_outputs("breast-cancer", "2", rows)
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert outputs["label"] == want["label"][i:i + 1].tolist()
        np.testing.assert_array_equal(np.float32(outputs["probabilities"]),
                                      want["probabilities"][i])
    batches = server.metric("canarygate_batches_total", model="breast-cancer") - warm_batches
    batched_rows = server.metric("canarygate_batch_rows_total",
                                 model="breast-cancer") - warm_rows
    assert batched_rows == len(rows)
    assert batches < len(rows) / 4  # most requests shared a run
    assert server.metric("canarygate_batches_on_loop_total", model="breast-cancer") == batches


def test_fast_batches_run_inline_once_timed_and_slow_ones_never(
    tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    fast = load("breast-cancer", "2", BatchingConfig(max_rows=8, max_wait_us=100))
    slow_model(tmp_path / "slow" / "1", width=512, layers=16)
    slow = ModelVersion.load("slow", "1", tmp_path / "slow" / "1",
                             batching=BatchingConfig(max_rows=8, max_wait_us=100))
    parts = calls(breast_cancer_rows, [1] * 64)
    runner = Runner(1)

    async def main() -> list[Any]:
        rounds = [await run_all(fast, runner, parts) for _ in range(3)]
        await run_all(slow, runner, [np.ones((8, 30), dtype=np.float32)] * 16)
        return rounds[-1]

    try:
        last = asyncio.run(main())
        fast_b, slow_b = runner.batcher(fast), runner.batcher(slow)
        assert fast_b is not None and slow_b is not None
    finally:
        runner.close()
    # After its first timed runs the small model's batches ran on the loop (one hand-off
    # costs more than the run), while the slow one's ~ms runs always went to the thread.
    # Most, not all: a probe that met a busy machine (CI's) raises the first runs' plain mean
    # above the limit for a batch or two; a batcher that never runs inline fails this.
    timed = fast_b.batches - fast_b.cost.probes
    assert timed > 0 and fast_b.inline_batches >= 0.75 * timed
    assert slow_b.inline_batches == 0 and slow_b.batches == 16
    want = ort_outputs("breast-cancer", "2", breast_cancer_rows[:64])
    for i, result in enumerate(last):
        assert_same_rows(result.outputs[1], want["probabilities"][i:i + 1])


def test_run_cost_is_the_weighted_least_squares_line() -> None:
    """RunCost's line against numpy's weighted fit of the same runs, with the weights its
    update gives each run (a plain mean at first, then each run worth 1 - decay the next)."""
    rng = np.random.default_rng(7)
    rows = rng.choice([1, 2, 4, 8, 16, 32], size=300)
    seconds = (60 + 4 * rows) * 1e-6 * rng.uniform(0.6, 1.4, size=rows.size)
    cost = RunCost(probes=4, decay=0.02, spike=1e9)  # no cap: the plain fit
    for r, t in zip(rows, seconds, strict=True):
        cost.learn(float(t), int(r))
    shares = [max(0.02, 1 / n) for n in range(1, rows.size + 1)]
    weights = [a * float(np.prod([1 - b for b in shares[i + 1:]]))
               for i, a in enumerate(shares)]
    slope, fixed = np.polyfit(rows, seconds, 1, w=np.sqrt(weights))
    for n in (1, 16, 64):
        assert cost.predict(n) == pytest.approx(fixed + slope * n, rel=1e-9)


def test_run_cost_reads_spread_in_small_runs_as_spread_not_as_cost_per_row() -> None:
    """A cheap model's runs in a busy server: one row costs 40-120 µs (cold caches), eight
    rows 80-160 µs. The cost of 16 rows is about 150 µs, well under the 300 µs below which a
    batch runs on the loop; a line through the least run with the mean slope put it over
    400 µs and sent such batches to a thread."""
    rng = np.random.default_rng(3)
    cost = RunCost()
    for _ in range(400):
        rows = int(rng.choice([1, 8]))
        cost.learn(float(rng.uniform(40, 120) if rows == 1 else rng.uniform(80, 160)) * 1e-6,
                   rows)
    expected = cost.predict(16)
    assert expected is not None and 120e-6 < expected < 200e-6
    # A run preempted for 50 ms moves the line by no more than a few runs' worth.
    cost.learn(0.05, 1)
    after = cost.predict(16)
    assert after is not None and after < 1.5 * expected
