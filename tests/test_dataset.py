"""The inference dataset on real servers: joined records, durability, policies, readers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pandas as pd
import pytest

from canarygate.recorder import reader
from conftest import MODELS, Server, v2_body


def config(tmp: Path, **dataset: Any) -> Path:
    settings = {"dir": str(tmp / "dataset"), "flush_interval_seconds": 0.1, **dataset}
    path = tmp / "gateway.yaml"
    path.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp / "state"}
dataset: {json.dumps(settings)}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "2": {{path: breast-cancer/2}}}}
    baseline: "1"
  - name: diabetes
    versions: {{"1": {{path: diabetes/1}}}}
    baseline: "1"
""")
    return path


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
        await asyncio.sleep(1.5)
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
    server: Server = launch(config(tmp_path, max_segment_bytes=4000, retention_bytes=20000,
                                   flush_interval_seconds=0.02))
    sent = []
    with server.client() as http:
        for i in range(300):
            r = http.post("/v2/models/breast-cancer/infer",
                          json=v2_body(breast_cancer_rows[i:i + 1]))
            sent.append(r.headers["x-request-id"])
    written = server.metric("canarygate_dataset_records_total", outcome="written")
    server.stop()
    segments = reader.segments(tmp_path / "dataset")
    assert written >= 290  # rotation wrote many segments before retention trimmed them
    assert len(segments) >= 2
    assert [p.name for p in segments] == sorted(p.name for p in segments)
    assert sum(p.stat().st_size for p in segments) <= 20000
    kept = [r["request_id"] for r in all_records(tmp_path)]
    # The oldest segments went: what is left is exactly the latest traffic, in order.
    assert 0 < len(kept) < 300
    assert kept == sent[-len(kept):]


@pytest.mark.parametrize("torn", [b'{"request_id": "x", "mod', b"\xff\xfe"])
def test_reader_skips_and_counts_a_torn_line(tmp_path: Path, torn: bytes) -> None:
    segment = tmp_path / "m" / "2026-01-01" / "a.jsonl"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b'{"request_id": "a", "model": "m", "status": 200}\n' + torn)
    stats = reader.ReadStats()
    assert [r["request_id"] for r in reader.read_all(tmp_path, stats)] == ["a"]
    assert stats.torn == 1 and stats.records == 1
