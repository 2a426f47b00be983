"""Replay on a dataset a real gateway wrote: figures checked against onnxruntime run directly."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from canarygate.cli import main
from canarygate.replay import (
    Options,
    ReplayError,
    load_report,
    model_digest,
    replay,
    replay_allows,
)
from canarygate.replay.html import render
from conftest import MODELS, chromium, gateway_config, ort_outputs, start_server, v2_body, watch

SINGLE = 450  # breast-cancer rows sent one a request; the rest go in requests of 7
LABELLED = 300  # requests that get feedback
BOUNDS = [*range(SINGLE + 1), *range(SINGLE + 7, 569, 7), 569]  # each request's rows


@dataclass
class Captured:
    dataset: Path
    x: np.ndarray  # every breast-cancer row, in the order sent
    y: np.ndarray
    diabetes: np.ndarray


def config(tmp: Path) -> Path:
    return gateway_config(tmp, dataset={"flush_interval_seconds": 0.05, "parquet": True})


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    """Traffic as a gateway served and recorded it: 569 breast-cancer rows, labels for the
    first 300 requests, one refused request, and 120 diabetes rows."""
    tmp = tmp_path_factory.mktemp("replay")
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    diabetes = load_diabetes().data.astype(np.float32)[:120]
    server = start_server(config(tmp), tmp)
    try:
        with server.client() as http:
            ids = []
            for lo, hi in itertools.pairwise(BOUNDS):
                r = http.post("/v2/models/breast-cancer/infer", json=v2_body(x[lo:hi]))
                assert r.status_code == 200, r.text
                ids.append((r.headers["x-request-id"], lo, hi))
            items = [{"request_id": rid, "label": [int(v) for v in y[lo:hi]]}
                     for rid, lo, hi in ids[:LABELLED]]
            assert http.post("/v2/models/breast-cancer/feedback",
                             json={"feedback": items}).status_code == 200
            assert http.post("/v2/models/breast-cancer/infer", content=b"{").status_code == 400
            for i in range(len(diabetes)):
                http.post("/v2/models/diabetes/infer", json=v2_body(diabetes[i:i + 1]))
    finally:
        server.stop()  # SIGTERM: every record written, every segment closed
    yield Captured(tmp / "dataset", x, y, diabetes)


def run(captured: Captured, candidate: str, model: str = "breast-cancer",
        dataset: Path | None = None) -> dict[str, Any]:
    return replay(Options(dataset or captured.dataset, model, candidate, models_dir=MODELS))


def gate(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in report["gates"] if g["gate"] == name)


def true_agreement(captured: Captured, candidate: str) -> float:
    served = ort_outputs("breast-cancer", "1", captured.x)["label"]
    other = ort_outputs("breast-cancer", candidate, captured.x)["label"]
    return float((served == other).mean())


def test_good_candidate_agrees_as_onnxruntime_says(captured: Captured) -> None:
    report = run(captured, "2")
    assert report["verdict"] == "pass", report["reasons"]
    assert report["dataset"]["replayed_rows"] == len(captured.x)
    a = report["agreement"]
    assert a["pairs"] == len(captured.x)
    # The same graphs on the same rows: batching may move a score's last bit, not a label.
    assert a["rate"] == pytest.approx(true_agreement(captured, "2"), abs=1 / len(captured.x))
    assert a["low"] < a["rate"] < a["high"]
    served = ort_outputs("breast-cancer", "1", captured.x)["label"]
    other = ort_outputs("breast-cancer", "2", captured.x)["label"]
    directions = {(k["served"], k["candidate"]): k["rows"] for k in a["disagreements"]}
    assert directions == {(0, 1): int(((served == 0) & (other == 1)).sum()),
                          (1, 0): int(((served == 1) & (other == 0)).sum())}
    assert report["baseline_reproduced"]["same"] == len(captured.x)
    assert report["dataset"]["skipped"]["another model"] >= len(captured.diabetes)
    assert any(reason.startswith("status 400") for reason in report["dataset"]["skipped"])
    assert report["cost"]["candidate_us_per_row"] > 0 and report["cost"]["ratio"] > 0
    assert {g["gate"]: g["verdict"] for g in report["gates"]} == {
        "errors": "pass", "agreement": "pass", "accuracy": "pass"}


def labelled_rows(captured: Captured) -> np.ndarray:
    """The rows whose requests got labels: the first LABELLED single-row requests."""
    return np.arange(LABELLED)


def test_flipped_label_candidate_fails_on_accuracy(captured: Captured) -> None:
    report = run(captured, "3")
    assert report["verdict"] == "fail"
    assert gate(report, "accuracy")["verdict"] == "fail"
    assert any(r.startswith("accuracy") for r in report["reasons"])
    assert report["agreement"]["rate"] == pytest.approx(true_agreement(captured, "3"),
                                                        abs=1 / len(captured.x))
    rows = labelled_rows(captured)
    y = captured.y[rows]
    acc = report["accuracy"]
    assert acc["labelled_rows"] == LABELLED
    for key, version in (("served_accuracy", "1"), ("candidate_accuracy", "3")):
        predicted = ort_outputs("breast-cancer", version, captured.x[rows])["label"]
        assert acc[key] == pytest.approx(float((predicted == y).mean()))
    assert acc["candidate_accuracy"] < acc["served_accuracy"] - 0.1
    counts = gate(report, "accuracy")["counts"]
    assert (counts["candidate_events"], counts["baseline_events"]) == (
        acc["candidate_wrong"], acc["served_wrong"])
    allowed, reason = replay_allows(report, "breast-cancer", "3")
    assert not allowed and "accuracy" in reason


def test_candidate_failing_on_large_radius_fails_on_errors(captured: Captured) -> None:
    report = run(captured, "4")
    assert report["verdict"] == "fail"
    assert gate(report, "errors")["verdict"] == "fail"
    # A record fails whole (the gateway answers it with one error), so a request of seven
    # rows fails when any of them has a large radius.
    large = captured.x[:, 0] >= 18
    records = [large[lo:hi] for lo, hi in itertools.pairwise(BOUNDS)]
    assert report["errors"]["candidate_failed_records"] == sum(r.any() for r in records)
    assert report["errors"]["candidate_failed_rows"] == sum(r.size for r in records if r.any())
    assert "Gather" in report["errors"]["first_candidate_error"]
    # Failures by decile of mean radius: all of the top decile, few of the lowest.
    failed = np.concatenate([np.full(r.size, r.any()) for r in records])
    radius = captured.x[:, 0].astype(np.float64)
    edges = np.unique(np.percentile(radius, np.arange(10, 100, 10)))
    expected = np.bincount(np.searchsorted(edges, radius, side="right"), weights=failed,
                           minlength=edges.size + 1)
    slices = next(f for f in report["slices"] if f["feature"] == "mean radius")["slices"]
    assert [s["candidate_failures"] for s in slices] == expected.astype(int).tolist()
    assert slices[-1]["candidate_failures"] == slices[-1]["rows"]
    assert slices[0]["candidate_failures"] < slices[0]["rows"] / 4
    # Where it answers, it answers as version 1 does, and its cost is timed on those rows.
    assert report["agreement"]["rate"] == 1.0
    answered = len(captured.x) - report["errors"]["candidate_failed_rows"]
    assert report["cost"]["timed_rows"] == answered and report["cost"]["ratio"] > 0


def test_regressor_differences(captured: Captured) -> None:
    report = run(captured, "2", model="diabetes")
    served = ort_outputs("diabetes", "1", captured.diabetes)["prediction"][:, 0]
    other = ort_outputs("diabetes", "2", captured.diabetes)["prediction"][:, 0]
    d = report["differences"]
    assert d["pairs"] == len(captured.diabetes)
    assert d["mean_abs"] == pytest.approx(float(np.abs(other - served).mean()), rel=1e-5)
    assert d["max_abs"] == pytest.approx(float(np.abs(other - served).max()), rel=1e-5)
    assert gate(report, "agreement")["verdict"] == "not_applicable"
    assert report["agreement"] is None and report["verdict"] == "pass"


def test_parquet_segments_alone_give_the_same_report(captured: Captured,
                                                     tmp_path: Path) -> None:
    both = run(captured, "3")
    only = tmp_path / "dataset"
    shutil.copytree(captured.dataset / "_parquet", only / "_parquet")
    parquet = run(captured, "3", dataset=only)
    for key in ("agreement", "accuracy", "errors"):
        assert parquet[key] == both[key]
    assert parquet["dataset"]["replayed_rows"] == both["dataset"]["replayed_rows"]
    assert parquet["dataset"]["segments"] == both["dataset"]["segments"]


def test_replay_allows() -> None:
    report = {"report": "canarygate.replay/1", "model": "m", "verdict": "pass", "reasons": [],
              "candidate": {"version": "2", "sha256": "abc"}, "dataset": {"replayed_rows": 9}}
    assert replay_allows(report, "m", "2") == (True, "replay passed on 9 rows")
    assert replay_allows(report, "m", "2", digest="abc")[0]
    assert not replay_allows(report, "m", "2", digest="def")[0]
    assert not replay_allows(report, "m", "3")[0]
    assert not replay_allows(report, "other", "2")[0]
    assert not replay_allows({**report, "verdict": "no_data"}, "m", "2")[0]
    assert not replay_allows({"verdict": "pass"}, "m", "2")[0]
    assert model_digest(MODELS / "breast-cancer" / "2") != model_digest(
        MODELS / "breast-cancer" / "3")


def test_load_report(tmp_path: Path) -> None:
    inline = {"report": "canarygate.replay/1"}
    assert load_report(inline, tmp_path) is inline
    (tmp_path / "r.json").write_text(json.dumps(inline))
    assert load_report("r.json", tmp_path) == inline
    assert load_report(str(tmp_path / "r.json"), tmp_path) == inline
    with pytest.raises(ReplayError, match="outside"):
        load_report("../r.json", tmp_path / "sub")
    with pytest.raises(ReplayError, match="cannot read"):
        load_report("absent.json", tmp_path)
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ReplayError, match="not JSON"):
        load_report("bad.json", tmp_path)


class Tables(HTMLParser):
    """Each table's cell texts by the table's id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.scripts = 0
        self.svgs = 0
        self.links = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        self.scripts += tag == "script"
        self.svgs += tag == "svg"
        self.links += tag == "link" or (tag == "img" and "src" in a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def same(cell: str, value: Any) -> bool:
    if value is None:
        return cell == "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(cell) == pytest.approx(value, rel=1e-5, abs=1e-9)
    return cell == str(value)


def test_html_tables_hold_the_json_figures(captured: Captured) -> None:
    report = run(captured, "4")
    parser = Tables()
    parser.feed(render(report))
    t = parser.tables
    assert parser.scripts == 0 and parser.links == 0 and parser.svgs >= 2
    summary = dict(t["summary"][1:])
    assert same(summary["replayed rows"], report["dataset"]["replayed_rows"])
    assert same(summary["candidate failed rows"], report["errors"]["candidate_failed_rows"])
    a = report["agreement"]
    assert all(same(c, v) for c, v in zip(t["agreement"][1], [
        a["pairs"], a["agreements"], a["rate"], a["low"], a["high"]], strict=True))
    gates = {row[0]: row for row in t["gates"][1:]}
    for g in report["gates"]:
        row = gates[g["gate"]]
        assert row[1] == g["verdict"] and same(row[2], g["statistic"])
    acc = report["accuracy"]
    assert t["accuracy"][0] == list(acc)
    assert all(same(c, v) for c, v in zip(t["accuracy"][1], acc.values(), strict=True))
    c = report["cost"]
    assert all(same(cell, c[k]) for cell, k in zip(t["cost"][1], [
        "timed_rows", "batches", "candidate_us_per_row", "baseline_us_per_row", "ratio"],
        strict=True))
    drift = {row[0]: row for row in t["drift"][1:]}
    for o in report["output_drift"]["outputs"]:
        assert drift[o["name"]][1] == o["level"] and same(drift[o["name"]][2], o.get("psi"))
    slices = t["slices"][1:]
    expected = [[f["feature"], s["low"], s["high"], s["rows"], s["candidate_failures"],
                 s["pairs"], s["agreement"]] for f in report["slices"] for s in f["slices"]]
    assert len(slices) == len(expected)
    for cells, values in zip(slices, expected, strict=True):
        assert all(same(c, v) for c, v in zip(cells, values, strict=True)), (cells, values)
    hist = report["output_histogram"]
    shown = t["output-histogram"][1:]
    assert [int(r[2]) for r in shown] == hist["served"]
    assert [int(r[3]) for r in shown] == hist["candidate"]
    answered = report["dataset"]["replayed_rows"] - report["errors"]["candidate_failed_rows"]
    assert sum(hist["candidate"]) == answered and sum(hist["served"]) == len(captured.x)
    skipped = dict(t["skipped"][1:])
    assert {k: int(v) for k, v in skipped.items()} == report["dataset"]["skipped"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canarygate", "replay", *map(str, args),
                           "--models-dir", str(MODELS)],
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_json_and_html_and_exits_by_verdict(captured: Captured,
                                                       tmp_path: Path) -> None:
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    done = cli(captured.dataset, "--model", "breast-cancer", "--candidate", "3",
               "--out", out, "--html", page)
    assert done.returncode == 1, done.stderr
    assert "verdict: fail" in done.stdout and "gate accuracy: fail" in done.stdout
    assert "569 / 569 rows (100%)" in done.stderr
    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(run(captured, "3") | {"cost": report["cost"]}))
    assert page.read_text().startswith("<!DOCTYPE html>")

def in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """The command's own code, without a Python start-up per case."""
    code = main(["replay", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_time_window_and_limit(captured: Captured, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    code, out, _ = in_process(capsys, captured.dataset, "--model", "breast-cancer",
                              "--candidate", "2", "--models-dir", MODELS,
                              "--since", "2000-01-01T00:00:00", "--limit", "100")
    assert code == 0
    assert "verdict: pass" in out and "100 records, 100 rows" in out and "past --limit" in out
    code, out, err = in_process(capsys, captured.dataset, "--model", "breast-cancer",
                                "--candidate", "2", "--models-dir", MODELS, "--until", "1e9")
    assert code == 2 and "no replayable records" in err and "after --until" in err


def test_bad_input_is_a_clear_error_without_a_traceback(
        captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nothing = cli(captured.dataset, "--model", "nope", "--candidate", "2")
    assert nothing.returncode == 2 and nothing.stdout == ""
    assert "no replayable records of model 'nope'" in nothing.stderr
    assert "Traceback" not in nothing.stderr
    code, out, err = in_process(capsys, tmp_path / "absent", "--model", "breast-cancer",
                                "--candidate", "2")
    assert (code, out) == (2, "") and "does not exist" in err
    code, out, err = in_process(capsys, captured.dataset, "--model", "breast-cancer",
                                "--candidate", "7", "--models-dir", MODELS)
    assert (code, out) == (2, "") and "no model.onnx for breast-cancer/7" in err
    # A "breast-cancer" version that is really the diabetes model: 10 inputs, not 30.
    models = tmp_path / "models"
    shutil.copytree(MODELS / "breast-cancer" / "1", models / "breast-cancer" / "1")
    shutil.copytree(MODELS / "diabetes" / "1", models / "breast-cancer" / "9")
    code, out, err = in_process(capsys, captured.dataset, "--model", "breast-cancer",
                                "--candidate", "9", "--models-dir", models)
    assert (code, out) == (2, "")
    assert "does not accept the captured inputs" in err
    assert "shape [1, 30]" in err and "[-1, 10]" in err
    # A candidate folder whose model.onnx links to a file outside the models directory is
    # refused as the gateway refuses it, before onnxruntime reads it.
    (models / "breast-cancer" / "8").mkdir()
    (models / "breast-cancer" / "8" / "model.onnx").symlink_to(
        (MODELS / "breast-cancer" / "2" / "model.onnx").resolve())
    code, out, err = in_process(capsys, captured.dataset, "--model", "breast-cancer",
                                "--candidate", "8", "--models-dir", models)
    assert (code, out) == (2, "")
    assert "model.onnx" in err and "outside" in err and "Traceback" not in err


def test_torn_line_is_skipped_and_counted(captured: Captured, tmp_path: Path) -> None:
    copy = tmp_path / "dataset"
    shutil.copytree(captured.dataset, copy, ignore=shutil.ignore_patterns("_parquet"))
    (segment,) = sorted((copy / "breast-cancer").glob("*/*.jsonl"))
    with segment.open("ab") as f:
        f.write(b'{"kind": "prediction", "model": "breast-cancer", "inputs": [{"na')
    report = run(captured, "2", dataset=copy)
    assert report["dataset"]["skipped"]["torn line"] == 1
    assert report["dataset"]["replayed_rows"] == len(captured.x)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplayError, match="no dataset segments"):
        run(captured, "2", dataset=tmp_path / "empty")


def test_a_rollout_may_require_a_passing_replay(captured: Captured, tmp_path: Path) -> None:
    """``POST /admin/rollouts/{model}/start`` with a replay report: a candidate that failed
    offline, or a report of another version, never takes live traffic (409); a passing one
    starts; ``require_replay`` without a report is a 400."""
    passed, failed = run(captured, "2"), run(captured, "3")
    assert (passed["verdict"], failed["verdict"]) == ("pass", "fail")
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp_path / "state"}
dataset: {{enabled: false}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "2": {{path: breast-cancer/2}},
               "3": {{path: breast-cancer/3}}}}
    baseline: "1"
""")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "passed.json").write_text(json.dumps(passed))
    server = start_server(path, tmp_path, {"CANARYGATE_ADMIN_TOKEN": "t"})
    start = "/admin/rollouts/breast-cancer/start"
    try:
        with server.client(headers={"authorization": "Bearer t"}) as http:
            refused = http.post(start, json={"candidate": "3", "replay": failed})
            wrong = http.post(start, json={"candidate": "3", "replay": passed})
            missing = http.post(start, json={"candidate": "2", "require_replay": True})
            outside = http.post(start, json={"candidate": "2", "replay": "../gateway.yaml"})
            phase = http.get("/admin/rollouts/breast-cancer").json()["phase"]
            allowed = http.post(start, json={"candidate": "2", "require_replay": True,
                                             "replay": "passed.json"})
    finally:
        server.stop()
    assert refused.status_code == 409 and "replay verdict 'fail'" in refused.json()["error"]
    assert wrong.status_code == 409 and "not '3'" in wrong.json()["error"]
    assert missing.status_code == 400 and "require_replay" in missing.json()["error"]
    assert outside.status_code == 400 and "outside" in outside.json()["error"]
    assert phase == "idle"  # nothing refused took any traffic
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["phase"] == "progressing" and allowed.json()["candidate"] == "2"


def test_the_html_report_opens_in_a_browser(captured: Captured, tmp_path: Path) -> None:
    """The report is one self-contained page: Chromium (Debian's, driven by playwright, as the
    dashboard's test does) opens it from a file with no request outside it and no console
    error, and its tables show the JSON's figures."""
    report = run(captured, "3")
    page_file = tmp_path / "report.html"
    page_file.write_text(render(report))
    errors: list[str] = []
    requests: list[str] = []
    with chromium() as browser:
        page = watch(browser.new_page(), errors, requests)
        page.goto(page_file.as_uri())
        text = page.inner_text("body")
        svgs = page.locator("svg").count()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert errors == [] and requests == [page_file.as_uri()]
    assert svgs >= 2 and "agreement" in text.lower()
    assert f"{report['agreement']['pairs']}" in text.replace(",", "")
