"""Several gateway processes on one real Redis behave as one gateway: one controller acts, one
rollout state, every replica routes alike and follows within a second, the judgement sees all
their traffic, a label joins on any replica, and Redis going away costs no request."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from conftest import ADMIN_TOKEN, AUTH, MODELS, RedisServer, Server, v2_body

HOLD = {"steps": [25, 100], "interval_seconds": 0.5, "min_step_seconds": 3600,
        "min_step_requests": 1_000_000, "progress_deadline_seconds": 7200}
# The ramp's mechanics, not the judgement's evidence rules (tested in test_judge_validity).
RAMP = {"steps": [50, 100], "interval_seconds": 0.5, "min_step_seconds": 1,
        "min_step_requests": 100, "auto_promote": True, "promote_on_evidence": False,
        "size_steps": False}
FOLLOW_SECONDS = 1.0  # a state change reaches every worker's router within this


def config(tmp: Path, prefix: str, drift: dict[str, object] | None = None,
           **state: object) -> Path:
    raw = {
        "models_dir": str(MODELS), "state_dir": str(tmp / "state"),
        "dataset": {"dir": str(tmp / "dataset")},
        "drift": drift or {"enabled": False},
        "state": {"backend": "redis", "prefix": prefix, "lease_seconds": 2.0,
                  "sync_seconds": 0.2, **state},
        "models": [{"name": "breast-cancer", "baseline": "1",
                    "versions": {v: {"path": f"breast-cancer/{v}"} for v in ("1", "2", "4")}}],
    }
    if drift:  # every latency to the detectors, for exact counts
        raw["detectors"] = {"max_latencies_per_second": 1e6}
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def group(launch: Callable[..., Server], redis: RedisServer, path: Path,
          workers: tuple[int, ...]) -> list[Server]:
    env = {"CANARYGATE_REDIS_URL": redis.url, "CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    return [launch(path, env, ("--workers", str(n)) if n > 1 else ()) for n in workers]


def view(server: Server) -> dict[str, Any]:
    with server.client(headers=AUTH) as http:
        found: dict[str, Any] = http.get("/admin/rollouts/breast-cancer").json()
    return found


def act(server: Server, action: str, **body: object) -> httpx.Response:
    with server.client(headers=AUTH) as http:
        return http.post(f"/admin/rollouts/breast-cancer/{action}", json=body)


def follow_time(servers: list[Server], key: str, value: object, seconds: float = 10) -> float:
    """Seconds until every replica's rollout shows ``key == value``, all polled at once."""
    async def run() -> float:
        clients = [httpx.AsyncClient(base_url=s.url, headers=AUTH, timeout=10) for s in servers]
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                views = await asyncio.gather(*(c.get("/admin/rollouts/breast-cancer")
                                               for c in clients))
                if all(v.json()[key] == value for v in views):
                    return time.monotonic() - started
                await asyncio.sleep(0.02)
        finally:
            for c in clients:
                await c.aclose()
        raise AssertionError(f"not every replica shows {key} = {value} within {seconds} s")

    return asyncio.run(run())


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {seconds} s")


def predict(servers: list[Server], bodies: list[bytes], n: int,
            keys: list[str] | None = None, concurrency: int = 32) -> list[tuple[int, str, str]]:
    """``n`` predictions spread over ``servers`` in turn: (status, variant, version) each."""
    async def run() -> list[tuple[int, str, str]]:
        clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in servers]
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> tuple[int, str, str]:
            headers = {"x-user-id": keys[i // len(servers)]} if keys else {}
            for attempt in range(3):
                try:
                    async with gate:
                        r = await clients[i % len(servers)].post(
                            "/v2/models/breast-cancer/infer", content=bodies[i % len(bodies)],
                            headers=headers)
                    break
                except httpx.TransportError:  # a kept-alive connection the server closed
                    if attempt == 2:
                        raise
            return (r.status_code, r.headers.get("x-canarygate-variant", ""),
                    r.headers.get("x-model-version", ""))

        try:
            return list(await asyncio.gather(*(one(i) for i in range(n))))
        finally:
            for c in clients:
                await c.aclose()

    return asyncio.run(run())


def decisions(server: Server) -> list[dict[str, Any]]:
    with server.client(headers=AUTH) as http:
        found: list[dict[str, Any]] = http.get(
            "/admin/rollouts/breast-cancer/decisions?limit=1000").json()["decisions"]
    return found


def holders(servers: list[Server]) -> float:
    return sum(s.metric("canarygate_controller_lease") for s in servers)


@pytest.fixture
def bodies(breast_cancer_rows: np.ndarray) -> list[bytes]:
    import orjson

    return [orjson.dumps(v2_body(breast_cancer_rows[i:i + 1]))
            for i in range(len(breast_cancer_rows))]


def test_three_gateways_share_one_rollout(launch: Callable[..., Server], tmp_path: Path,
                                          redis_server: RedisServer,
                                          bodies: list[bytes]) -> None:
    servers = group(launch, redis_server, config(tmp_path, "share"), (1, 1, 2))
    wait_for(lambda: holders(servers) == 1, 5, "exactly one controller holds the lease")

    assert act(servers[0], "start", candidate="2", schedule=HOLD).status_code == 200
    took = follow_time(servers, "weight", 25)
    print(f"\n[scale-out] a start reached every replica in {took:.3f} s")
    assert took <= FOLLOW_SECONDS, took

    # The split over all of them, within one point of the weight.
    served = predict(servers, bodies, 12_000)
    assert all(status == 200 for status, _, _ in served)
    share = sum(variant == "candidate" for _, variant, _ in served) / len(served)
    print(f"\n[scale-out] candidate share over 3 gateways: {share:.4f} of {len(served)}")
    assert abs(share - 0.25) <= 0.01
    # The judge sees every worker's requests: the step's merged counts hold them all.
    merged = wait_for_counts(servers[0], len(served))
    assert merged == len(served)

    # 2,000 sticky keys: one version each, whichever replica answers.
    keys = [f"user-{i}" for i in range(2000)]
    answers = predict(servers, bodies, 3 * len(keys), keys=keys)
    by_key: dict[str, set[str]] = {}
    for i, (status, _, version) in enumerate(answers):
        assert status == 200
        by_key.setdefault(keys[i // 3], set()).add(version)
    assert all(len(v) == 1 for v in by_key.values())
    assert 0.2 < sum(v == {"2"} for v in by_key.values()) / len(keys) < 0.3

    # A person's rollback on another replica reaches every router within a second.
    assert act(servers[1], "rollback", reason="test").status_code == 200
    took = follow_time(servers, "phase", "rolled_back")
    print(f"[scale-out] a rollback reached every replica in {took:.3f} s")
    assert took <= FOLLOW_SECONDS, took
    assert {v for _, _, v in predict(servers, bodies, 300)} == {"1"}

    # A bad candidate is rolled back once, by one controller; a good one promoted once.
    assert act(servers[2], "start", candidate="4", schedule=RAMP).status_code == 200
    ramp_until(servers, bodies, "rolled_back")
    assert act(servers[0], "start", candidate="2", schedule=RAMP).status_code == 200
    ramp_until(servers, bodies, "promoted")
    wait_for(lambda: all(decisions(s) == decisions(servers[0]) for s in servers[1:]), 5,
             "every replica serves the same log")
    logs = [decisions(s) for s in servers]
    actions = [(d["action"], d["candidate"], d["actor"]) for d in logs[0]]
    assert actions.count(("rollback", "4", "controller")) == 1
    assert sum(a == "promote" for a, _, _ in actions) == 1
    assert len({d["id"] for d in logs[0]}) == len(logs[0])


def wait_for_counts(server: Server, n: int) -> int:
    def seen() -> int:
        counts = view(server)["step_counts"]
        return int(counts["baseline"]["requests"] + counts["candidate"]["requests"])
    wait_for(lambda: seen() >= n, 5, f"the judge sees all {n} requests")
    return seen()


def ramp_until(servers: list[Server], bodies: list[bytes], phase: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert all(status < 500 for status, _, _ in predict(servers, bodies, 300))
        if all(view(s)["phase"] == phase for s in servers):
            return
    raise AssertionError(f"not {phase} within 60 s: {view(servers[0])['reason']}")


def test_killing_the_lease_holder_hands_the_rollout_on(launch: Callable[..., Server],
                                                      tmp_path: Path,
                                                      redis_server: RedisServer,
                                                      bodies: list[bytes]) -> None:
    servers = group(launch, redis_server, config(tmp_path, "kill"), (1, 1))
    wait_for(lambda: holders(servers) == 1, 5, "one controller")
    # The judgement's own evidence rules are not what this test is about.
    steps = {"steps": [10, 20, 30, 40, 100], "interval_seconds": 0.5, "min_step_seconds": 1.5,
             "min_step_requests": 30, "auto_promote": True, "promote_on_evidence": False,
             "size_steps": False}
    assert act(servers[0], "start", candidate="2", schedule=steps).status_code == 200
    while view(servers[0])["step"] < 1:
        predict(servers, bodies, 200)
    holder = next(s for s in servers if s.metric("canarygate_controller_lease") == 1)
    other = next(s for s in servers if s is not holder)
    step_at_kill = view(other)["step"]
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait()
    took = wait_for(lambda: other.metric("canarygate_controller_lease") == 1, 5,
                    "the other replica takes the lease")
    print(f"\n[scale-out] lease taken over {took:.2f} s after kill -9 (lease 2 s)")
    assert view(other)["step"] >= step_at_kill
    deadline = time.monotonic() + 60
    while view(other)["phase"] != "promoted" and time.monotonic() < deadline:
        assert all(status == 200 for status, _, _ in predict([other], bodies, 200))
    assert view(other)["phase"] == "promoted", view(other)["reason"]
    advances = [d["step"] for d in decisions(other) if d["action"] == "advance"]
    assert advances == sorted(set(advances)) == list(range(1, len(steps["steps"]))), advances


def test_redis_away_costs_no_request(launch: Callable[..., Server], tmp_path: Path,
                                     redis_server: RedisServer, bodies: list[bytes]) -> None:
    servers = group(launch, redis_server, config(tmp_path, "away"), (1, 1))
    wait_for(lambda: holders(servers) == 1, 5, "one controller")
    assert act(servers[0], "start", candidate="2", schedule=HOLD).status_code == 200
    wait_for(lambda: all(view(s)["weight"] == 25 for s in servers), 5, "both at 25 %")

    redis_server.stop()
    served: list[tuple[int, str, str]] = []
    started = time.monotonic()
    while time.monotonic() - started < 10:
        served += predict(servers, bodies, 200)
    refused = act(servers[1], "pause", reason="during the outage")
    outage = [(s.metric("canarygate_store_up"), s.metric("canarygate_controller_lease"))
              for s in servers]
    redis_server.start()

    statuses = Counter(status for status, _, _ in served)
    print(f"\n[scale-out] Redis away 10 s: {dict(statuses)}; variants "
          f"{dict(Counter(v for _, v, _ in served))}")
    assert set(statuses) == {200}, statuses
    assert {v for _, v, _ in served} == {"baseline", "candidate"}  # the last routing known
    assert refused.status_code == 503 and "store" in refused.json()["error"]
    assert outage == [(0.0, 0.0), (0.0, 0.0)]  # seen, and nobody acts without its lease
    assert all(s.metric("canarygate_store_outages_total") >= 1 for s in servers)
    assert any("Redis is away" in s.log.read_text() for s in servers)
    # Back without a restart: one controller again, and people's actions work.
    wait_for(lambda: holders(servers) == 1, 10, "one controller after the outage")
    wait_for(lambda: act(servers[1], "pause", reason="after").status_code == 200, 10,
             "actions accepted again")
    # Every replica follows the stored state again: writes an ex-controller queued while
    # Redis was away are refused (decided under a lease since lost, or made from a revision
    # the store never took), and nothing it builds on them overwrites the person's pause.
    took = wait_for(lambda: all(view(s)["phase"] == "paused" for s in servers), 5,
                    "both paused")
    print(f"[scale-out] both replicas paused {took:.2f} s after the pause was taken")


SHARED_DRIFT = {"interval_seconds": 1.0, "window_intervals": 60, "min_window": 200,
                "max_rows_per_second": 1e6}


def test_two_replicas_share_labels_stats_drift_and_detectors(
        launch: Callable[..., Server], tmp_path: Path, redis_server: RedisServer,
        bodies: list[bytes], breast_cancer_rows: np.ndarray) -> None:
    a, b = group(launch, redis_server, config(tmp_path, "labels", drift=SHARED_DRIFT), (1, 1))
    with a.client() as http:
        answer = http.post("/v2/models/breast-cancer/infer", content=bodies[0])
    rid = answer.headers["x-request-id"]
    label = {"request_id": rid, "label": 0}
    with b.client() as http:  # at once, on the replica that did not answer
        first = http.post("/v2/models/breast-cancer/feedback", json=label)
    with a.client() as http:
        again = http.post("/v2/models/breast-cancer/feedback", json=label)
        other = http.post("/v2/models/breast-cancer/feedback",
                          json={"request_id": rid, "label": 1})
    assert first.status_code == 200, first.text
    assert first.json()["results"][0]["status"] == "recorded"
    assert again.json()["results"][0]["status"] == "duplicate"
    assert other.status_code == 409
    joined = sum(s.metric("canarygate_feedback_labels_total", model="breast-cancer")
                 for s in (a, b))
    assert joined == 1
    with b.client() as http:
        unknown = http.post("/v2/models/breast-cancer/feedback",
                            json={"request_id": "never-served", "label": 0})
    assert unknown.status_code == 404
    shared_figures(a, b, bodies, breast_cancer_rows)


def shared_figures(a: Server, b: Server, bodies: list[bytes], rows: np.ndarray) -> None:
    """/admin/stats and /admin/drift on either replica show both replicas' traffic: the
    last minute's requests add up to what the client sent, the drift window holds the rows
    of both, the controller's detectors saw every latency, and inputs shifted on one replica
    only show as drift on the other."""
    import orjson

    started = time.monotonic()
    sent = 1 + len(predict([a, b], bodies, 600))  # the first answer, above, and these
    took = [time.monotonic() - started]
    took.append(wait_for(lambda: all(requests(s) == sent for s in (a, b)), 5,
                         f"/admin/stats on both replicas counts all {sent} requests"))
    assert all(stats(s)["workers"] == 2 and stats(s)["merged"] for s in (a, b))
    took.append(wait_for(lambda: all(latencies(s) == sent for s in (a, b)), 5,
                         "the detectors see every replica's latencies"))
    took.append(wait_for(lambda: all(window_rows(s) == sent for s in (a, b)), 10,
                         "both replicas' drift windows hold every row"))
    shifted = rows.copy()
    shifted[:, :10] *= 1.5
    assert all(status == 200 for status, _, _ in predict(
        [a], [orjson.dumps(v2_body(shifted[i:i + 1])) for i in range(300)], 300))
    took.append(wait_for(lambda: window_rows(b) == sent + 300, 10,
                         "the rows replica A answered reach replica B's drift window"))
    assert drift(b)["variants"][0]["state"] == "alert", "A's shifted inputs drift on B"
    wait_for(lambda: window_rows(a) == sent + 300, 5, "and A's own window")
    assert drift(a)["variants"][0] == drift(b)["variants"][0]  # one report everywhere
    print("\n[scale-out] sent, stats merged, detectors fed, drift merged, shift seen on B: "
          + ", ".join(f"{t:.2f} s" for t in took))


def stats(server: Server) -> dict[str, Any]:
    with server.client(headers=AUTH) as http:
        found: dict[str, Any] = http.get("/admin/stats/breast-cancer").json()
    return found


def requests(server: Server) -> int:
    return sum(int(v["requests"]) for v in stats(server)["variants"])


def drift(server: Server) -> dict[str, Any]:
    with server.client(headers=AUTH) as http:
        found: dict[str, Any] = http.get("/admin/drift/breast-cancer").json()
    return found


def latencies(server: Server) -> int:
    """Latencies of version 1 the controller's detectors saw, as ``server`` shows them."""
    found = (drift(server)["detectors"] or {}).get("1", {}).get("latency", {})
    return int(found.get("values", 0))


def window_rows(server: Server) -> int:
    variants = drift(server)["variants"]
    return int(variants[0]["window_rows"]) if variants else 0


def test_workers_above_one_need_a_shared_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump({"models_dir": str(MODELS), "state_dir": str(tmp_path),
                                    "models": [{"name": "breast-cancer", "baseline": "1",
                                                "versions": {"1": {"path": "breast-cancer/1"}}}]}))
    run = subprocess.run([sys.executable, "-m", "canarygate", "serve", "--config", str(path),
                          "--workers", "2"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items()
                              if k != "CANARYGATE_REDIS_URL"})
    assert run.returncode == 2
    assert "needs a shared state store" in run.stderr and "state.backend" in run.stderr


def test_redis_takes_a_revision_only_on_top_of_its_parent(redis_server: RedisServer) -> None:
    """Two workers that each made revision 2 from 1 made different states: the second is
    refused, and so is what it then builds on its own 2 (revision 3, which a check on the
    number alone would take over the first worker's 2). A checkpoint stores a revision over
    itself; over a revision it was not made from, it is refused too."""
    from canarygate.rollout.redis_store import RedisStore, StaleRevision
    from canarygate.rollout.state import RolloutState

    store = RedisStore.connect(redis_server.url, "lineage", 1.0)
    first = RolloutState(model="m", baseline="1").evolve()
    store.commit(first, None, None)
    mine, theirs = first.evolve(reason="paused by a person"), first.evolve(reason="a tick")
    store.commit(mine, None, None)
    with pytest.raises(StaleRevision):
        store.commit(theirs, None, None)
    with pytest.raises(StaleRevision):
        store.commit(theirs.evolve(reason="built on the refused one"), None, None)
    store.commit(mine.checkpoint(pending_log_e={"errors": 1.0}), None, None)
    with pytest.raises(StaleRevision):
        store.commit(theirs.checkpoint(pending_log_e={"errors": 2.0}), None, None)
    stored = store.load()["m"]
    assert (stored.reason, stored.revision, stored.pending_log_e) == (
        "paused by a person", 2, {"errors": 1.0})
    store.commit(stored.evolve(reason="next"), None, None)  # what was read back builds on


def test_a_reader_of_the_decision_log_gets_each_decision_once_in_order(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions appended while a replica reads the log reach it once each, in the log's order
    (a length read apart from the range read skipped one and read another twice: 329 of 3,000
    here before), and decisions past the log's cap still reach it (its length stops growing)."""
    import threading

    from canarygate.rollout import redis_store
    from canarygate.rollout.redis_store import RedisStore

    store = RedisStore.connect(redis_server.url, "log", 1.0)
    total = 3000

    def write() -> None:
        for i in range(total):
            store.commit(None, {"model": "m", "id": i}, None)

    writer = threading.Thread(target=write)
    writer.start()
    seen, read = 0, []
    while writer.is_alive() or seen < total:
        seen, found = store.decisions_since("m", seen, 10_000)
        read += [d["id"] for d in found]
    writer.join()
    assert read == list(range(total))

    monkeypatch.setattr(redis_store, "KEEP_DECISIONS", 50)
    for i in range(total, total + 120):
        store.commit(None, {"model": "m", "id": i}, None)
        seen, found = store.decisions_since("m", seen, 10_000)
        assert [d["id"] for d in found] == [i]
    assert store.client.llen(store.key("decisions", "m")) == 50
    # A reader far behind gets the newest the log keeps, and no more than it asks for.
    assert [d["id"] for d in store.decisions_since("m", 0, 10_000)[1]] == list(
        range(total + 70, total + 120))
    assert [d["id"] for d in store.decisions_since("m", 0, 5)[1]] == list(
        range(total + 115, total + 120))
