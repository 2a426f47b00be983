"""The inference dataset on real servers: joined records, durability, policies, readers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pandas as pd
import pytest

from canarygate import background
from canarygate.config import DatasetConfig
from canarygate.recorder import Record, Recorder, reader
from canarygate.recorder import writer as writer_module
from canarygate.recorder.writer import Writer
from conftest import MODELS, FakeClock, Server, gateway_config, ort_outputs, v2_body


def config(tmp: Path, **dataset: Any) -> Path:
    return gateway_config(tmp, dataset={"flush_interval_seconds": 0.1, **dataset})


def all_records(tmp: Path) -> list[dict[str, Any]]:
    return list(reader.read_all(tmp / "dataset"))


def test_one_joined_record_per_request_readable_by_duckdb_and_pandas(
    launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    server: Server = launch(config(tmp_path, parquet=True))
    rows = breast_cancer_rows[:20]
    answers = {}
    with server.client() as http:
        for i in range(20):
            path = ("/v2/models/breast-cancer/infer" if i % 2
                    else "/v2/models/breast-cancer/versions/2/infer")
            r = http.post(path, json=v2_body(rows[i:i + 1]))
            answers[r.headers["x-request-id"]] = (i, r.json())
        bad = http.post("/v2/models/breast-cancer/infer", content=b"{nope")
        unknown = http.post("/v2/models/nope/infer", json=v2_body(rows[:1]))
    server.stop()  # SIGTERM: the writer drains and closes every segment

    records = all_records(tmp_path)
    assert len(records) == 22
    by_id = {r["request_id"]: r for r in records}
    for rid, (i, doc) in answers.items():
        rec = by_id[rid]
        assert rec["status"] == 200 and rec["error"] is None
        assert rec["model"] == "breast-cancer" and rec["version"] == doc["model_version"]
        assert rec["variant"] == ("baseline" if i % 2 else "pinned")
        assert rec["routing"] == ("weight" if i % 2 else "pinned")
        (inp,) = rec["inputs"]
        assert inp["name"] == "input" and inp["shape"] == [1, 30]
        np.testing.assert_array_equal(np.array(inp["data"], np.float32), rows[i])
        assert [o["name"] for o in rec["outputs"]] == ["label", "probabilities"]
        assert rec["outputs"][0]["data"] == doc["outputs"][0]["data"]
        lat = rec["latency_ms"]
        assert 0 < lat["inference"] <= lat["total"] and lat["queue"] >= 0
    failed = by_id[bad.headers["x-request-id"]]
    assert failed["status"] == 400 and "not valid JSON" in failed["error"]
    assert failed["inputs"] is None
    assert by_id[unknown.headers["x-request-id"]]["status"] == 404

    # DuckDB reads the JSON Lines segments as they are; pandas reads the Parquet ones.
    glob = str(tmp_path / "dataset" / "**" / "*.jsonl")
    counts = duckdb.sql(f"select status, count(*) from read_json_auto('{glob}') "
                        "group by status order by status").fetchall()
    assert counts == [(200, 20), (400, 1), (404, 1)]
    frame = pd.read_parquet(tmp_path / "dataset" / "_parquet")
    assert len(frame) == 22 and set(frame["request_id"]) == set(by_id)


def test_cli_summary_and_export(launch: Any, tmp_path: Path,
                                diabetes_rows: np.ndarray) -> None:
    server: Server = launch(config(tmp_path))
    with server.client() as http:
        for i in range(7):
            http.post("/v2/models/diabetes/infer", json=v2_body(diabetes_rows[i:i + 1]))
        http.post("/v2/models/diabetes/infer", content=b"[]")
    server.stop()
    run = [sys.executable, "-m", "canarygate", "dataset"]
    summary = subprocess.run([*run, "summary", str(tmp_path / "dataset")],
                             capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr
    assert "8 records" in summary.stdout
    assert "diabetes" in summary.stdout and "400" in summary.stdout
    out = tmp_path / "all.parquet"
    export = subprocess.run([*run, "export", str(tmp_path / "dataset"), "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    frame = pd.read_parquet(out)
    assert len(frame) == 8 and (frame["status"] == 200).sum() == 7


async def hammer(url: str, stop: asyncio.Event, sent: list[tuple[str, float, int]],
                 rows: np.ndarray, workers: int = 8) -> None:
    bodies = [v2_body(rows[i:i + 1]) for i in range(len(rows))]
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        async def worker(k: int) -> None:
            i = k
            while not stop.is_set():
                try:
                    r = await http.post("/v2/models/breast-cancer/infer",
                                        json=bodies[i % len(bodies)])
                except httpx.TransportError:
                    return  # the server went away: what it answered is what counts
                sent.append((r.headers["x-request-id"], time.monotonic(), r.status_code))
                i += workers

        await asyncio.gather(*(worker(k) for k in range(workers)))


def load_for(server: Server, seconds: float, rows: np.ndarray,
             workers: int = 8) -> list[tuple[str, float, int]]:
    """Load the server from several workers for ``seconds``; what it answered."""
    answered: list[tuple[str, float, int]] = []

    async def main() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(hammer(server.url, stop, answered, rows, workers))
        await asyncio.sleep(seconds)
        stop.set()
        await load

    asyncio.run(main())
    return answered


def test_sigterm_under_load_writes_every_record(
    launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    server: Server = launch(config(tmp_path))
    answered: list[tuple[str, float, int]] = []

    async def main() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(hammer(server.url, stop, answered, breast_cancer_rows))
        deadline = time.monotonic() + 30  # a busy machine answers fewer a second
        while len(answered) <= 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 30)
        stop.set()
        await load

    asyncio.run(main())
    # Uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert server.process.returncode in (0, -signal.SIGTERM)
    records = all_records(tmp_path)
    assert len(answered) > 200
    assert {r["request_id"] for r in records} == {rid for rid, _, _ in answered}
    assert len(records) == len(answered)


def test_sigkill_loses_at_most_a_flush_interval(
    launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    server: Server = launch(config(tmp_path, flush_interval_seconds=0.1))
    answered: list[tuple[str, float, int]] = []

    async def main() -> float:
        stop = asyncio.Event()
        load = asyncio.create_task(hammer(server.url, stop, answered, breast_cancer_rows))
        await asyncio.sleep(2.5)
        killed = time.monotonic()
        os.kill(server.process.pid, signal.SIGKILL)
        stop.set()
        await load
        return killed

    killed = asyncio.run(main())
    server.process.wait(10)
    stats = reader.ReadStats()
    records = list(reader.read_all(tmp_path / "dataset", stats))  # every segment readable
    assert stats.torn <= stats.segments  # at most one torn last line a segment
    written = {r["request_id"] for r in records}
    # Everything answered more than a flush interval (plus scheduling slack) before the kill
    # is on disk.
    settled = [rid for rid, at, _ in answered if at < killed - 0.1 - 0.4]
    assert len(settled) > 30
    missing = [rid for rid in settled if rid not in written]
    assert not missing, f"{len(missing)} of {len(settled)} settled records lost"


def test_full_queue_drop_policy_is_counted(launch: Any, tmp_path: Path,
                                           breast_cancer_rows: np.ndarray) -> None:
    server: Server = launch(config(tmp_path, queue_size=1, flush_interval_seconds=2.0,
                                   on_full="drop"))
    answered = load_for(server, 1.0, breast_cancer_rows)
    dropped = server.metric("canarygate_dataset_records_total", outcome="dropped")
    captured = server.metric("canarygate_dataset_records_total", outcome="captured")
    assert dropped > 0
    assert captured + dropped == len(answered)
    server.stop()
    assert len(all_records(tmp_path)) == captured  # nothing captured is lost


def test_full_queue_block_policy_loses_nothing(launch: Any, tmp_path: Path,
                                               breast_cancer_rows: np.ndarray) -> None:
    server: Server = launch(config(tmp_path, queue_size=2, flush_interval_seconds=0.05,
                                   on_full="block"))
    answered = load_for(server, 1.0, breast_cancer_rows, workers=16)
    assert server.metric("canarygate_dataset_blocked_requests_total") > 0
    assert server.metric("canarygate_dataset_records_total", outcome="dropped") == 0
    server.stop()
    assert len(all_records(tmp_path)) == len(answered)


def test_sampling_and_redaction(launch: Any, tmp_path: Path,
                                breast_cancer_rows: np.ndarray) -> None:
    server: Server = launch(config(tmp_path, sample_rate=0.5,
                                   redact={"hash": ["input"]}))
    rows = breast_cancer_rows[:1]
    with server.client() as http:
        for _ in range(400):
            http.post("/v2/models/breast-cancer/infer", json=v2_body(rows))
    server.stop()
    records = all_records(tmp_path)
    assert abs(len(records) - 200) < 3 * (400 * 0.25) ** 0.5
    digest = hashlib.sha256(rows.astype(np.float32).tobytes()).hexdigest()
    assert all(r["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 30],
                                "sha256": digest}] for r in records)


def test_rotation_and_retention(launch: Any, tmp_path: Path,
                                breast_cancer_rows: np.ndarray) -> None:
    limit = 4000
    server: Server = launch(config(tmp_path, max_segment_bytes=limit, retention_bytes=20000,
                                   flush_interval_seconds=0.02))
    sent = []
    with server.client() as http:
        for i in range(300):
            r = http.post("/v2/models/breast-cancer/infer",
                          json=v2_body(breast_cancer_rows[i:i + 1]))
            sent.append(r.headers["x-request-id"])
    # The writer runs at a low priority (background.lower_priority): on a busy machine it may
    # trail the answers for a moment, so its count is awaited before the server stops.
    deadline = time.monotonic() + 20
    while (written := server.metric("canarygate_dataset_records_total",
                                    outcome="written")) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()
    segments = reader.segments(tmp_path / "dataset")
    assert written == 300
    assert [p.name for p in segments] == sorted(p.name for p in segments)
    assert sum(p.stat().st_size for p in segments) <= 20000
    assert_segment_sizes(segments, limit)
    assert len(segments) >= 3  # 20000 bytes hold at least three segments of at most 5 KB
    kept = [r["request_id"] for r in all_records(tmp_path)]
    # The oldest segments went: what is left is exactly the latest traffic, in order.
    assert 0 < len(kept) < 300
    assert kept == sent[-len(kept):]


def assert_segment_sizes(segments: list[Path], limit: int) -> None:
    """Each segment closed for its size reached the limit with its last line and not before;
    only the newest (closed at shutdown) may be short."""
    for i, path in enumerate(segments):
        lines = path.read_bytes().splitlines(keepends=True)
        size = sum(len(line) for line in lines)
        assert size - len(lines[-1]) < limit, path.name
        if i < len(segments) - 1:
            assert size >= limit, path.name


# The writer in-process: real files, the real thread; a clock the test moves ------------------


def record(i: int, model: str = "breast-cancer", **changes: Any) -> Record:
    """A record shaped like a real one: 30 FP32 inputs, a label and two probabilities."""
    fields: dict[str, Any] = dict(
        time=time.time(), request_id=f"r{i:05d}", model=model, version="1",
        variant="baseline", routing="weight", step=-1, weight=0.0, protocol="v2", status=200,
        error=None, inputs={"input": np.full((1, 30), i, np.float32)},
        outputs={"label": np.array([i % 2]), "probabilities": np.array([[0.25, 0.75]],
                                                                          np.float32)},
        queue_ms=0.1, inference_ms=0.2, total_ms=0.5)
    return Record(**{**fields, **changes})


class InProcess:
    def __init__(self, tmp: Path, clock: FakeClock | None = None, **dataset: Any) -> None:
        self.config = DatasetConfig(**{"dir": tmp / "dataset", "flush_interval_seconds": 0.01,
                                       **dataset})
        self.recorder = Recorder(self.config)
        self.writer = Writer(self.recorder, self.config, clock or time.time)

    def put(self, *records: Record) -> None:
        for r in records:
            assert self.recorder.put(r)

    def settle(self) -> None:
        """Wait (polling) until the writer has handled everything queued."""
        deadline = time.monotonic() + 10
        r = self.recorder
        while r.written + r.failed < r.captured and time.monotonic() < deadline:
            time.sleep(0.005)
        assert r.written + r.failed == r.captured

    def ids(self) -> list[list[str]]:
        return [[rec["request_id"] for rec in reader.records(path)]
                for path in reader.segments(self.config.dir)]


def test_one_large_drain_is_split_across_segments(tmp_path: Path) -> None:
    """300 records queued before the writer starts, so its first drain holds them all: they
    still go to segments that each pass the limit by one line at most."""
    w = InProcess(tmp_path, max_segment_bytes=4000)
    w.put(*(record(i) for i in range(300)))
    w.writer.start()
    w.writer.stop()
    segments = reader.segments(w.config.dir)
    assert len(segments) > 10
    assert_segment_sizes(segments, 4000)
    assert [rid for seg in w.ids() for rid in seg] == [f"r{i:05d}" for i in range(300)]
    assert w.recorder.written == 300


def test_a_writer_behind_drains_without_pausing(tmp_path: Path, monkeypatch: Any) -> None:
    """The writer's drain pauses every 0.2 ms of work for the event loop, except while it is
    behind: more than 1/64 of the queue's limit waiting (it then catches up at full speed,
    pausing only for the last 1/64), or a record waiting longer than a flush interval (what a
    kill may lose)."""
    pauses: list[int] = []
    monkeypatch.setattr(background, "yield_gil", lambda: pauses.append(1))

    def drain(queue_size: int, age: float = 0.0) -> int:
        pauses.clear()
        w = InProcess(tmp_path / f"{queue_size}-{age}", queue_size=queue_size,
                      flush_interval_seconds=60.0)
        now = time.time()
        w.put(*(record(i, time=now - age) for i in range(4000)))
        w.writer.start()
        w.writer.stop()  # one drain of all 4,000, then every segment closed
        assert w.recorder.written == 4000
        return len(pauses)

    keeping_up = drain(100_000)  # 4,000 waiting of 100,000: paced throughout
    behind = drain(4000)  # the queue full: paced for its last 62 records only
    late = drain(100_000, age=61.0)  # each record a flush interval old: never paced
    assert keeping_up >= 25  # 4,000 records are several ms of serialising
    assert behind < keeping_up / 3, (behind, keeping_up)
    assert late == 0, (late, keeping_up)


def test_a_writer_starved_of_the_core_is_caught_up_by_a_second_thread(
        tmp_path: Path, monkeypatch: Any) -> None:
    """The writer runs at nice 19; on a saturated core it gets almost none of it (2 % in the
    bench, a fifth of the records). Here it gets none at all: its thread is held where it would
    lower its priority. The catch-up thread, at nice 10, drains the queue once it is
    behind by count (over 1/64 of the limit), or by age (its oldest record older than
    ``CATCH_UP_LAG`` flush intervals), and not before; in order, into the same segments."""
    starved = threading.Event()

    def lower_priority(ceiling: int = 19) -> None:  # the writer's thread gets no core
        if threading.current_thread().name == "canarygate-recorder":
            starved.wait(30)

    monkeypatch.setattr(writer_module, "lower_priority", lower_priority)
    # The writer's clock (records' ages) moves only when the test moves it.
    clock = FakeClock(time.time() + 1)
    w = InProcess(tmp_path, clock, queue_size=640, flush_interval_seconds=0.05)  # behind: > 10
    w.writer.start()
    try:
        w.put(*(record(i, time=clock.now) for i in range(8)))  # few and fresh: left alone
        time.sleep(0.3)  # six looks of the catch-up thread
        assert w.recorder.written == 0 and w.writer.caught_up == 0
        w.put(*(record(i, time=clock.now) for i in range(8, 200)))  # behind by count
        w.settle()
        assert w.writer.caught_up >= 1
        caught = w.writer.caught_up
        w.put(*(record(i, time=clock.now) for i in range(200, 203)))  # few, and fresh
        time.sleep(0.3)
        assert w.recorder.written == 200 and w.writer.caught_up == caught
        clock.now += 4 * 0.05 + 0.01  # now older than four flush intervals: behind by age
        w.settle()
        assert w.writer.caught_up > caught
    finally:
        starved.set()
        w.writer.stop()
    assert [rid for seg in w.ids() for rid in seg] == [f"r{i:05d}" for i in range(203)]
    assert (w.recorder.written, w.recorder.dropped) == (203, 0)


def test_rotation_and_retention_by_age(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    w = InProcess(tmp_path, clock, max_segment_seconds=60, retention_seconds=3600)
    w.writer.start()
    w.put(*(record(i) for i in range(5)))
    w.settle()
    clock.now += 61  # the open segment is too old for the next record
    w.put(*(record(i) for i in range(5, 8)))
    w.settle()
    assert w.ids() == [[f"r{i:05d}" for i in range(5)], [f"r{i:05d}" for i in range(5, 8)]]
    # The first segment's last write two hours ago (file times are wall-clock): past
    # retention, it goes when the next segment closes.
    first = reader.segments(w.config.dir)[0]
    os.utime(first, (time.time() - 7200, time.time() - 7200))
    w.writer.stop()
    assert w.ids() == [[f"r{i:05d}" for i in range(5, 8)]]


def test_the_writer_survives_io_errors_and_counts_them(tmp_path: Path) -> None:
    """A file where a model's folder should be: its records fail, counted; a dangling segment
    link (a file deleted under the retention's listing): skipped. The thread lives on and
    writes what comes next; after it stops, records count as dropped."""
    w = InProcess(tmp_path, max_segment_bytes=2000, retention_bytes=10**6)
    root = w.config.dir
    (root / "old" / "2026-01-01").mkdir(parents=True)
    (root / "old" / "2026-01-01" / "gone.jsonl").symlink_to(root / "nowhere.jsonl")
    (root / "diabetes").write_text("not a folder")
    w.writer.start()
    w.put(*(record(i, "diabetes") for i in range(4)))
    w.put(*(record(i) for i in range(4, 40)))  # several segments close: retention runs
    w.settle()
    assert (w.recorder.failed, w.recorder.written) == (4, 36)
    (root / "diabetes").unlink()
    w.put(*(record(i, "diabetes") for i in range(40, 43)))
    w.settle()
    assert w.writer._thread.is_alive()
    w.writer.stop()
    assert (w.recorder.failed, w.recorder.written) == (4, 39)
    assert not w.recorder.put(record(99)) and w.recorder.dropped == 1


def test_drop_and_hash_redaction(tmp_path: Path) -> None:
    w = InProcess(tmp_path, redact={"drop": ["ssn"], "hash": ["email"]})
    email = np.array([b"a@example.com"], dtype=np.object_)
    w.put(record(1, inputs={"ssn": np.array([[123456789]]), "email": email,
                            "input": np.ones((1, 3), np.float32)}))
    w.writer.start()
    w.writer.stop()
    (rec,) = reader.read_all(w.config.dir)
    assert [t["name"] for t in rec["inputs"]] == ["email", "input"]
    assert rec["inputs"][0] == {"name": "email", "datatype": "BYTES", "shape": [1],
                                "sha256": hashlib.sha256(email.tobytes()).hexdigest()}
    assert rec["inputs"][1]["data"] == [1.0, 1.0, 1.0]
    assert "123456789" not in reader.segments(w.config.dir)[0].read_text()


# Routing fields on a real server ---------------------------------------------------------------


def test_records_carry_step_weight_fallback_and_shadow(launch: Any, tmp_path: Path,
                                                       breast_cancer_rows: np.ndarray,
                                                       diabetes_rows: np.ndarray) -> None:
    """breast-cancer ramps to candidate 4 (fails on mean radius >= 18: the baseline answers,
    routing ``fallback``) at step 0, weight 40; diabetes mirrors every request to candidate 2
    in a shadow phase: each record joins the shadow's outputs."""
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp_path / "state"}
dataset: {{dir: {tmp_path / "dataset"}, flush_interval_seconds: 0.05}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "4": {{path: breast-cancer/4}}}}
    baseline: "1"
    candidate: "4"
    rollout: {{steps: [40, 100], interval_seconds: 60, min_step_requests: 100000}}
  - name: diabetes
    versions: {{"1": {{path: diabetes/1}}, "2": {{path: diabetes/2}}}}
    baseline: "1"
    candidate: "2"
    rollout: {{shadow_percent: 100, shadow_only: true, interval_seconds: 60}}
""")
    server: Server = launch(path)
    large = breast_cancer_rows[breast_cancer_rows[:, 0] >= 18][:40]
    small = breast_cancer_rows[breast_cancer_rows[:, 0] < 18][:40]
    bc_rows = np.concatenate([large, small])
    sent: dict[str, tuple[str, np.ndarray]] = {}
    with server.client() as http:
        for row in bc_rows:
            r = http.post("/v2/models/breast-cancer/infer", json=v2_body(row[None]))
            sent[r.headers["x-request-id"]] = ("breast-cancer", row)
        pinned = http.post("/v2/models/breast-cancer/versions/1/infer",
                           json=v2_body(bc_rows[:1])).headers["x-request-id"]
        for row in diabetes_rows[:20]:
            r = http.post("/v2/models/diabetes/infer", json=v2_body(row[None]))
            sent[r.headers["x-request-id"]] = ("diabetes", row)
    server.stop()
    records = {r["request_id"]: r for r in all_records(tmp_path)}
    assert len(records) == len(sent) + 1
    pin = records[pinned]
    assert (pin["variant"], pin["routing"], pin["step"], pin["weight"]) == (
        "pinned", "pinned", -1, 0.0)
    variants = []
    for rid, (model, row) in sent.items():
        rec = records[rid]
        if model == "diabetes":
            assert (rec["variant"], rec["step"], rec["weight"]) == ("baseline", -1, 0.0)
            assert rec["shadow"]["version"] == "2" and rec["shadow"]["error"] is None
            (out,) = rec["shadow"]["outputs"]
            expected = ort_outputs("diabetes", "2", row[None])["prediction"]
            np.testing.assert_array_equal(np.array(out["data"], np.float32), expected.ravel())
            continue
        variants.append(rec["variant"])
        assert (rec["step"], rec["weight"], rec["status"], rec["shadow"]) == (0, 40.0, 200,
                                                                              None)
        expected_version = {"candidate": "4", "fallback": "1", "baseline": "1"}
        assert rec["version"] == expected_version[rec["variant"]]
        assert rec["routing"] == ("fallback" if rec["variant"] == "fallback" else "weight")
        if rec["variant"] == "fallback":
            assert row[0] >= 18  # only the rows version 4 cannot answer fall back
        label = ort_outputs("breast-cancer", rec["version"], row[None])["label"]
        assert rec["outputs"][0]["data"] == label.tolist()
    assert {"candidate", "fallback", "baseline"} <= set(variants)


# Counters on a real server ---------------------------------------------------------------------


def test_failed_records_are_counted(launch: Any, tmp_path: Path,
                                    breast_cancer_rows: np.ndarray,
                                    diabetes_rows: np.ndarray) -> None:
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "breast-cancer").write_text("a file where a folder should be")
    server: Server = launch(config(tmp_path))
    with server.client() as http:
        for i in range(5):
            http.post("/v2/models/breast-cancer/infer", json=v2_body(breast_cancer_rows[i:i + 1]))
        for i in range(3):
            http.post("/v2/models/diabetes/infer", json=v2_body(diabetes_rows[i:i + 1]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.metric(
            "canarygate_dataset_records_total", outcome="written") < 3:
        time.sleep(0.05)
    assert server.metric("canarygate_dataset_records_total", outcome="failed") == 5
    assert server.metric("canarygate_dataset_records_total", outcome="written") == 3
    server.stop()
    assert len(all_records(tmp_path)) == 3


def test_writer_lag_gauge(launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray) -> None:
    """With a 5 s flush interval, records wait: the gauge is the age of the oldest one."""
    server: Server = launch(config(tmp_path, flush_interval_seconds=5.0))
    with server.client() as http:
        for _ in range(3):  # a flush may fall between the requests and the scrape: retry
            before = time.time()
            first = http.post("/v2/models/breast-cancer/infer",
                              json=v2_body(breast_cancer_rows[:1]))
            answered = time.time()
            http.post("/v2/models/breast-cancer/infer", json=v2_body(breast_cancer_rows[1:2]))
            time.sleep(0.3)  # let the oldest record age
            scraped = time.time()
            lag = server.metric("canarygate_dataset_writer_lag_seconds")
            depth = server.metric("canarygate_dataset_queue_depth")
            if depth == 2:
                break
        assert first.status_code == 200 and depth == 2
        assert scraped - answered <= lag <= time.time() - before
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.metric(
                "canarygate_dataset_queue_depth") > 0:
            time.sleep(0.1)
        assert server.metric("canarygate_dataset_writer_lag_seconds") == 0


@pytest.mark.parametrize("torn", [b'{"request_id": "x", "mod', b"\xff\xfe"])
def test_reader_skips_and_counts_a_torn_line(tmp_path: Path, torn: bytes) -> None:
    segment = tmp_path / "m" / "2026-01-01" / "a.jsonl"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b'{"request_id": "a", "model": "m", "status": 200}\n' + torn)
    stats = reader.ReadStats()
    assert [r["request_id"] for r in reader.read_all(tmp_path, stats)] == ["a"]
    assert stats.torn == 1 and stats.records == 1
