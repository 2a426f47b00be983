"""The committed demo models agree with their metadata, reference profiles and samples."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from conftest import MODELS, ort_outputs

VERSIONS = sorted(p.parent for p in MODELS.glob("*/*/model.onnx"))


def test_the_demo_versions_exist() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in VERSIONS}
    assert {"breast-cancer/1", "breast-cancer/2", "breast-cancer/3", "breast-cancer/4",
            "breast-cancer/5", "diabetes/1", "diabetes/2"} <= names


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_metadata_profile_and_sample_agree(folder) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads((folder / "metadata.json").read_text())
    profile = json.loads((folder / "profile.json").read_text())
    sample = np.load(folder / "reference.npz")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    assert [i["name"] for i in meta["inputs"]] == [i.name for i in session.get_inputs()]
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in session.get_outputs()]
    n_features = len(meta["feature_names"])
    assert meta["inputs"][0]["shape"] == [-1, n_features]
    assert len(profile["features"]) == n_features
    rows = sample["inputs"]
    # A failing candidate's profile and sample hold only the rows it can answer.
    answered = round(meta["split"]["train_rows"] * (1 - meta["failing_share"]["train"]))
    assert rows.shape == (profile["rows"], n_features) == (answered, n_features)

    # The stored outputs are what the model answers on the stored inputs.
    outputs = ort_outputs(folder.parent.name, folder.name, rows)
    for name, values in outputs.items():
        np.testing.assert_allclose(sample[f"output_{name}"], values, rtol=1e-5, atol=1e-6)

    # Each profile's bin counts are what its edges make of the reference sample.
    for feature in profile["features"]:
        column = rows[:, feature["column"]].astype(np.float64)
        check_profile(feature, column)
    for out in profile["outputs"]:
        values = outputs[out["name"]]
        check_profile(out, values[:, out["column"]] if "column" in out else values)


def test_bad_candidates_are_genuinely_bad(breast_cancer_rows: np.ndarray) -> None:
    """Flipped labels cost accuracy; the lookup fails on large tumours; 5 is far slower."""
    meta = {v: json.loads((MODELS / "breast-cancer" / v / "metadata.json").read_text())
            for v in ("1", "3", "4")}
    assert meta["3"]["metrics"]["test"]["accuracy"] < meta["1"]["metrics"]["test"]["accuracy"] - 0.1
    assert 0.05 < meta["4"]["failing_share"]["test"] < 0.4
    session = ort.InferenceSession(str(MODELS / "breast-cancer" / "4" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    large = breast_cancer_rows[breast_cancer_rows[:, 0] >= 18][:1]
    small = breast_cancer_rows[breast_cancer_rows[:, 0] < 18][:1]
    session.run(None, {"input": small})
    with pytest.raises(Exception, match=r"out of bounds|out of range|indices"):
        session.run(None, {"input": large})
    trees = json.loads((MODELS / "breast-cancer" / "5" / "metadata.json").read_text())
    assert "20,000 trees" in trees["description"]
    assert (MODELS / "breast-cancer" / "5" / "model.onnx").stat().st_size > 50 * (
        MODELS / "breast-cancer" / "2" / "model.onnx").stat().st_size


def check_profile(col: dict, values: np.ndarray) -> None:  # type: ignore[type-arg]
    if col["kind"] == "categorical":
        cats, counts = np.unique(values, return_counts=True)
        assert cats.tolist() == pytest.approx(col["categories"])
        assert counts.tolist() == col["counts"]
        return
    for key, n_edges in (("deciles", 9), ("percentiles", 99)):
        edges = np.asarray(col[key]["edges"])
        assert len(edges) <= n_edges and np.all(np.diff(edges) > 0)
        counts = np.bincount(np.searchsorted(edges, values, side="right"),
                             minlength=len(edges) + 1)
        assert counts.tolist() == col[key]["counts"]
    assert col["mean"] == pytest.approx(values.mean(), rel=1e-6)
