"""Rollouts end to end on a real server under load, with genuinely good and bad candidates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from conftest import ADMIN_TOKEN, AUTH, MODELS, Server, drive, ort_outputs, v2_body

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

# The ramp's mechanics in seconds: promotion on evidence (non-inferiority, which takes
# thousands of requests at these error and latency rates) is tested in test_judge_validity.
FAST = {"steps": [10, 25, 50, 100], "interval_seconds": 0.25, "min_step_seconds": 0.5,
        "min_step_requests": 60, "auto_promote": True, "promote_on_evidence": False}
ENDED = ("promoted", "rolled_back", "paused", "awaiting_promotion")


def gateway_config(tmp: Path, candidate: str | None = None) -> Path:
    versions = ", ".join(f'"{v}": {{path: breast-cancer/{v}}}' for v in "12345")
    extra = f'\n    candidate: "{candidate}"\n    rollout: {json.dumps(FAST)}' if candidate else ""
    config = tmp / "gateway.yaml"
    config.write_text(f"""
server: {{inference_threads: 2}}
models_dir: {MODELS}
state_dir: {tmp / "state"}
models:
  - name: breast-cancer
    versions: {{{versions}}}
    baseline: "1"{extra}
""")
    return config


@pytest.fixture
def gateway(launch: Any, tmp_path: Path) -> Server:
    server: Server = launch(gateway_config(tmp_path), {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    return server


def start(server: Server, candidate: str, **schedule: Any) -> dict[str, Any]:
    with server.client(headers=AUTH) as http:
        r = http.post("/admin/rollouts/breast-cancer/start",
                      json={"candidate": candidate, "schedule": {**FAST, **schedule},
                            "reason": f"test of version {candidate}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def decisions(server: Server) -> list[dict[str, Any]]:
    with server.client(headers=AUTH) as http:
        r = http.get("/admin/rollouts/breast-cancer/decisions?limit=1000")
    return list(r.json()["decisions"])


def ended(state: dict[str, Any]) -> bool:
    return state.get("phase") in ENDED


def test_good_candidate_climbs_every_step_and_is_promoted(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    start(gateway, "2")
    load = drive(gateway, breast_cancer_rows, ended)
    assert load.state["phase"] == "promoted", load.state
    assert load.state["baseline"] == "2"
    assert set(load.statuses) == {200}
    actions = [d["action"] for d in decisions(gateway)]
    assert actions.count("advance") == 3 and actions[-1] == "promote"
    weights = [d["weight"] for d in decisions(gateway) if d["action"] == "advance"]
    assert weights == [25, 50, 100]
    # Every judgement kept its figures.
    holds = [d for d in decisions(gateway) if d["action"] == "hold"]
    assert holds and all({g["gate"] for g in d["gates"]} >= {"errors", "health"} for d in holds)
    # After promotion version 2 answers everything routed.
    with gateway.client() as http:
        r = http.post("/v2/models/breast-cancer/infer", json={"inputs": [
            {"name": "input", "shape": [1, 30], "datatype": "FP32",
             "data": breast_cancer_rows[0].tolist()}]})
    assert r.headers["x-model-version"] == "2"
    assert gateway.metric("canarygate_rollout_decisions_total", model="breast-cancer",
                          action="promote") == 1


def test_failing_candidate_is_rolled_back_and_clients_see_no_error(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    start(gateway, "4")
    assert gateway.metric("canarygate_rollout_phase", model="breast-cancer",
                          phase="progressing") == 1
    assert gateway.metric("canarygate_rollout_weight", model="breast-cancer") == 10
    load = drive(gateway, breast_cancer_rows, ended)
    state = load.state
    assert state["phase"] == "rolled_back", state
    assert set(load.statuses) == {200}, "a client saw an error"
    assert load.fallbacks > 0
    figures = state["figures"]
    assert figures["gate"] in ("errors", "health") and figures["verdict"] == "fail"
    assert figures["counts"]["candidate_events" if figures["gate"] == "errors"
                             else "interval_errors"] > 0
    assert figures["statistic"] >= figures["threshold"]
    last = decisions(gateway)[-1]
    assert last["action"] == "rollback" and last["actor"] == "controller"
    assert any(g["verdict"] == "fail" for g in last["gates"])
    assert gateway.metric("canarygate_candidate_failures_total", model="breast-cancer",
                          version="4") == load.fallbacks
    # /metrics tells the same story: the phase, the weight, and the verdicts behind it.
    phases = {p: gateway.metric("canarygate_rollout_phase", model="breast-cancer", phase=p)
              for p in ("idle", "progressing", "rolled_back")}
    assert phases == {"idle": 0, "progressing": 0, "rolled_back": 1}
    assert gateway.metric("canarygate_rollout_weight", model="breast-cancer") == 0
    assert gateway.metric("canarygate_rollout_verdicts_total", model="breast-cancer",
                          gate=figures["gate"], verdict="fail") == 1
    judged = sum(1 for d in decisions(gateway) if d["actor"] == "controller")
    assert gateway.metric("canarygate_rollout_verdicts_total", model="breast-cancer",
                          gate="health") == judged
    assert gateway.metric("canarygate_rollout_decisions_total", model="breast-cancer",
                          action="rollback") == 1
    # The weight dropped to 0 at once: nothing routed reaches version 4 any more.
    after = drive(gateway, breast_cancer_rows, lambda s: True, seconds=0.5)
    assert "4" not in after.versions[len(after.versions) // 2:]


def test_slow_candidate_is_rolled_back_by_the_latency_gate(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    # Baseline traffic first, so the step's slow threshold (the baseline's p95) is known.
    # Few concurrent clients: queueing would otherwise blur the candidate's extra millisecond.
    drive(gateway, breast_cancer_rows, lambda s: False, seconds=1.0, concurrency=4)
    start(gateway, "5", min_step_requests=400, min_step_seconds=5)
    load = drive(gateway, breast_cancer_rows, ended, concurrency=4)
    assert load.state["phase"] == "rolled_back", load.state
    figures = load.state["figures"]
    assert figures["gate"] in ("latency", "latency_slo"), figures
    counts = figures["counts"]
    # The candidate's runs were slower than the baseline's p95 far more often (a batch of
    # requests is one run: they share its latency).
    assert (counts["candidate_events"] / counts["candidate_runs"]
            > 2 * counts["baseline_events"] / counts["baseline_runs"])
    assert set(load.statuses) == {200}


def test_candidate_timeouts_are_answered_by_the_baseline(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    # Version 5 needs about a millisecond a row: a 0.2 ms budget fails nearly every request.
    start(gateway, "5", candidate_timeout_ms=0.2, steps=[50, 100])
    load = drive(gateway, breast_cancer_rows, ended, concurrency=4)
    assert load.state["phase"] == "rolled_back", load.state
    assert set(load.statuses) == {200} and load.fallbacks > 0
    assert gateway.metric("canarygate_candidate_failures_total", model="breast-cancer",
                          version="5", kind="candidate-timeout") > 0


def test_a_copy_of_the_baseline_is_not_rolled_back_for_errors_both_make(
    launch: Any, tmp_path: Path, breast_cancer_rows: np.ndarray
) -> None:
    """Inputs so large that version 1 answers NaN fail both arms alike: no rollback."""
    config = gateway_config(tmp_path)
    text = config.read_text()
    copy = '"5": {path: breast-cancer/5}, "1-copy": {path: breast-cancer/1}'
    config.write_text(text.replace('"5": {path: breast-cancer/5}', copy))
    server = launch(config, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    rows = breast_cancer_rows.copy()
    rows[::10] = 1e37  # finite, but every tenth row overflows inside the model: NaN out
    start(server, "1-copy", steps=[50, 100], min_step_requests=300)
    load = drive(server, rows, ended, concurrency=8)
    assert load.state["phase"] == "promoted", load.state
    assert set(load.statuses) == {200}
    holds = [d for d in decisions(server) if d["action"] in ("hold", "advance")]
    errors = [g for d in holds for g in d["gates"] if g["gate"] == "errors"
              and g["verdict"] in ("pass", "marginal")]
    # Both arms had their share of errors, and the test saw them as alike.
    assert errors and any(g["counts"]["baseline_events"] > 0 for g in errors)


def test_rollback_survives_a_restart(launch: Any, tmp_path: Path,
                                     breast_cancer_rows: np.ndarray) -> None:
    config = gateway_config(tmp_path, candidate="4")  # the config starts the failing rollout
    env = {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    server = launch(config, env)
    load = drive(server, breast_cancer_rows, ended)
    assert load.state["phase"] == "rolled_back"
    server.stop()
    again = launch(config, env)
    with again.client(headers=AUTH) as http:
        state = http.get("/admin/rollouts/breast-cancer").json()
        log = http.get("/admin/rollouts/breast-cancer/decisions").json()["decisions"]
    assert state["phase"] == "rolled_back" and state["weight"] == 0
    assert state["figures"] == load.state["figures"]
    assert log[-1]["action"] == "rollback"
    routed = drive(again, breast_cancer_rows, lambda s: True, seconds=0.5)
    assert set(routed.versions) == {"1"}


def test_shadow_compares_without_serving_and_rolls_back_a_disagreeing_candidate(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    start(gateway, "3", shadow_percent=100, shadow_only=True, min_agreement=0.95)
    load = drive(gateway, breast_cancer_rows, ended)
    state = load.state
    assert state["phase"] == "rolled_back", state
    figures = state["figures"]
    assert figures["gate"] == "agreement" and figures["statistic"] >= figures["threshold"]
    assert figures["counts"]["agreement_rate"] < 0.95
    # Clients only ever got the baseline's answers.
    assert set(load.versions) == {"1"} and set(load.statuses) == {200}


def test_sticky_keys_keep_their_variant(gateway: Server, breast_cancer_rows: np.ndarray) -> None:
    start(gateway, "2")
    body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                        "data": breast_cancer_rows[0].tolist()}]}

    def variants(http: httpx.Client) -> dict[str, str]:
        return {key: http.post("/v2/models/breast-cancer/infer", json=body,
                               headers={"x-user-id": key}).headers["x-model-version"]
                for key in (f"user-{i}" for i in range(300))}

    with gateway.client() as http:
        admin = {"headers": AUTH}
        assert http.post("/admin/rollouts/breast-cancer/weight",
                         json={"weight": 20, "reason": "test"}, **admin).status_code == 200
        first, second = variants(http), variants(http)
        assert first == second
        share = sum(v == "2" for v in first.values()) / len(first)
        assert 0.12 < share < 0.28
        http.post("/admin/rollouts/breast-cancer/weight", json={"weight": 60}, **admin)
        raised = variants(http)
        assert all(raised[k] == "2" for k, v in first.items() if v == "2")
        assert sum(v == "2" for v in raised.values()) > sum(v == "2" for v in first.values())
        http.post("/admin/rollouts/breast-cancer/rollback", json={"reason": "test"}, **admin)
        assert set(variants(http).values()) == {"1"}


def test_unkeyed_split_on_the_server(gateway: Server, breast_cancer_rows: np.ndarray) -> None:
    start(gateway, "2")
    with gateway.client(headers=AUTH) as http:
        http.post("/admin/rollouts/breast-cancer/weight", json={"weight": 25})
    load = drive(gateway, breast_cancer_rows, lambda s: False, seconds=4)
    share = load.versions.count("2") / len(load.versions)
    sigma = (0.25 * 0.75 / len(load.versions)) ** 0.5
    assert len(load.versions) > 500
    assert abs(share - 0.25) < 4 * sigma, (share, len(load.versions))
    assert gateway.metric("canarygate_rollout_weight", model="breast-cancer") == 25


def test_pinned_requests_are_never_canary_traffic(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    start(gateway, "2", interval_seconds=3600)  # no tick starts a new window meanwhile
    drive(gateway, breast_cancer_rows, lambda s: False, seconds=1.0, concurrency=4)
    candidate_label = {"model": "breast-cancer", "variant": "candidate"}
    with gateway.client(headers=AUTH) as http:
        before = http.get("/admin/rollouts/breast-cancer").json()
        served = gateway.metric("canarygate_requests_total", **candidate_label)
        for i in range(40):
            for version in ("1", "2"):
                r = http.post(f"/v2/models/breast-cancer/versions/{version}/infer",
                              json=v2_body(breast_cancer_rows[i:i + 1]),
                              headers={"x-user-id": f"user-{i}"})
                assert r.status_code == 200 and r.headers["x-model-version"] == version
                assert r.headers["x-canarygate-variant"] == "pinned"
        after = http.get("/admin/rollouts/breast-cancer").json()
    assert before["step_counts"]["candidate"]["requests"] > 0  # the window was counting
    assert after["step_counts"] == before["step_counts"]
    assert after["shadow"] == before["shadow"]
    assert gateway.metric("canarygate_requests_total", **candidate_label) == served


def timed(http: httpx.Client, path: str, body: dict[str, Any], version: str) -> float:
    """Client-observed seconds of one request, which ``version`` must answer."""
    started = time.perf_counter()
    r = http.post(path, json=body)
    took = time.perf_counter() - started
    assert r.status_code == 200 and r.headers["x-model-version"] == version, r.text
    return took


def test_shadow_adds_no_latency_to_the_baseline_answer(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    """Shadowed answers against pinned answers of the same baseline, taken in turn over the
    same seconds, so that the machine's other load weighs on both alike. Before each pinned
    request the previous shadow run has been compared (polled), so no shadow competes with
    the next request for this small machine's CPU: what is left to see is whether the
    candidate's run lies on the response path."""
    # Version 5 is a far larger tree ensemble: on 32 rows it needs several milliseconds more
    # than version 1, so a shadow run on the response path would show in every request.
    bodies = [v2_body(breast_cancer_rows[i:i + 32]) for i in range(0, 480, 4)]
    routed = "/v2/models/breast-cancer/infer"
    pinned = "/v2/models/breast-cancer/versions/{}/infer"
    start(gateway, "5", shadow_percent=100, shadow_only=True, interval_seconds=3600)
    shadowed, plain, candidate = [], [], []
    with gateway.client(headers=AUTH) as http:
        for i, body in enumerate(bodies):
            shadowed.append(timed(http, routed, body, "1"))
            deadline, pairs = time.monotonic() + 10, 0
            while time.monotonic() < deadline and pairs < 32 * (i + 1):
                pairs = http.get("/admin/rollouts/breast-cancer").json()["shadow"]["pairs"]
            assert pairs == 32 * (i + 1), f"shadow runs fell behind: {pairs} pairs"
            plain.append(timed(http, pinned.format(1), body, "1"))
            if i < 40:
                candidate.append(timed(http, pinned.format(5), body, "5"))
    assert gateway.metric("canarygate_shadow_runs_total", model="breast-cancer",
                          outcome="ok") == len(bodies)
    extra = np.median(candidate) - np.median(plain)  # what the candidate's run would add
    assert extra > 0.002, (np.median(candidate), np.median(plain))
    added = np.median(shadowed) - np.median(plain)
    assert added < 0.25 * extra, (added, extra)
    # Most shadowed answers came faster than the candidate could have answered alone.
    assert np.mean(np.array(shadowed) < np.percentile(candidate, 10)) > 0.8


def test_flipped_label_candidate_is_rolled_back_by_the_accuracy_gate_once_labels_arrive(
    gateway: Server, breast_cancer_rows: np.ndarray
) -> None:
    """Version 3 was trained with 40 % of its labels flipped: it serves as fast and as
    reliably as version 1, so only the labels that come back can show it is worse."""
    truth = load_breast_cancer().target
    start(gateway, "3", steps=[50, 100], min_step_requests=100_000, min_step_seconds=3600)
    rng = np.random.default_rng(8)
    answered: list[tuple[str, int, str]] = []
    with gateway.client() as http:
        for i in rng.integers(0, len(truth), 600):
            r = http.post("/v2/models/breast-cancer/infer",
                          json=v2_body(breast_cancer_rows[i:i + 1]))
            assert r.status_code == 200
            answered.append((r.headers["x-request-id"], int(i), r.headers["x-model-version"]))
        # Served, but no labels yet: once the controller has judged this traffic, nothing
        # says the candidate is worse.
        requests = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and requests < len(answered):
            time.sleep(0.05)
            state = http.get("/admin/rollouts/breast-cancer", headers=AUTH).json()
            verdicts = {g["gate"]: g for g in state["last_verdicts"]}
            errors = verdicts.get("errors", {}).get("counts", {})
            requests = errors.get("candidate_requests", 0) + errors.get("baseline_requests", 0)
        assert requests == len(answered), state
        assert state["phase"] == "progressing", state
        assert verdicts["accuracy"]["verdict"] == "no_data", (verdicts, state["schedule"])
        # One request joins all its labels at once, so the judgement that follows sees every
        # one of them (sent in chunks, the gate may fail before the last chunk lands).
        items = [{"request_id": rid, "label": int(truth[i])} for rid, i, _ in answered]
        r = http.post("/v2/models/breast-cancer/feedback", json=items)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and state["phase"] != "rolled_back":
            time.sleep(0.1)
            state = http.get("/admin/rollouts/breast-cancer", headers=AUTH).json()
    assert state["phase"] == "rolled_back", state
    figures = state["figures"]
    assert figures["gate"] == "accuracy" and figures["verdict"] == "fail"
    # The figures are this traffic's: wrong predictions per variant, as the labels said.
    wrong = {"1": 0, "3": 0}
    labelled = {"1": 0, "3": 0}
    for _, i, version in answered:
        labelled[version] += 1
        wrong[version] += int(ort_outputs("breast-cancer", version,
                                          breast_cancer_rows[i:i + 1])["label"][0] != truth[i])
    counts = figures["counts"]
    assert (counts["candidate_requests"], counts["baseline_requests"]) == (
        labelled["3"], labelled["1"])
    assert (counts["candidate_events"], counts["baseline_events"]) == (wrong["3"], wrong["1"])
    assert figures["statistic"] >= figures["threshold"]
    last = decisions(gateway)[-1]
    assert last["action"] == "rollback" and "accuracy" in last["reason"]
    # The judgement kept what each variant served in the last minute.
    traffic = {(t["version"], t["variant"]): t for t in last["traffic"]}
    assert traffic[("3", "candidate")]["requests"] == labelled["3"]
    assert traffic[("1", "baseline")]["requests"] == labelled["1"]
    assert traffic[("3", "candidate")]["p50_ms"] > 0
    assert gateway.metric("canarygate_rollout_verdicts_total", model="breast-cancer",
                          gate="accuracy", verdict="fail") == 1
    # The candidate's error stream reached its detectors too.
    assert gateway.metric("canarygate_detector_values_total", model="breast-cancer", version="3",
                          stream="errors") == labelled["3"]
