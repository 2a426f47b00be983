"""Rebuild the demo models from datasets bundled with scikit-learn (no download).

Each model version lands in ``models/<model>/<version>/`` with:

- ``model.onnx``: the fitted estimator exported by skl2onnx (plain tensor outputs, no ZipMap);
- ``metadata.json``: task, feature names, input/output signature, training and held-out metrics;
- ``profile.json``: the reference profile the drift work compares live traffic against, per
  input feature and per output, computed on the training split;
- ``reference.npz``: the training split's inputs and this version's outputs on them (compressed).

Everything is seeded, so running this twice with the same library versions gives the same models.
Run it with ``make models``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
SEED = 0
TARGET_OPSET = 17
INPUT_NAME = "input"
PERCENTILES = np.arange(1, 100)  # 99 interior cut points
DECILES = np.arange(10, 100, 10)  # 9 interior cut points
MAX_CATEGORIES = 5


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # "classification" or "regression"
    feature_names: list[str]
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class VersionSpec:
    model: str
    version: str
    description: str
    make_estimator: Callable[[], Any]


def load_dataset(name: str) -> Dataset:
    if name == "breast-cancer":
        bunch = load_breast_cancer()
        task, stratify = "classification", bunch.target
    elif name == "diabetes":
        bunch = load_diabetes()
        task, stratify = "regression", None
    else:
        raise ValueError(f"unknown dataset {name!r}")
    x = bunch.data.astype(np.float32)
    y = bunch.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=stratify
    )
    return Dataset(name, task, list(bunch.feature_names), x_train, x_test, y_train, y_test)


SPECS = [
    VersionSpec(
        "breast-cancer", "1", "StandardScaler + LogisticRegression",
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
    ),
    VersionSpec(
        "breast-cancer", "2", "GradientBoostingClassifier, 100 trees of depth 3",
        lambda: GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED),
    ),
    VersionSpec(
        "diabetes", "1", "StandardScaler + Ridge regression",
        lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
    ),
    VersionSpec(
        "diabetes", "2", "RandomForestRegressor, 100 trees, min 5 samples per leaf",
        lambda: RandomForestRegressor(n_estimators=100, min_samples_leaf=5, random_state=SEED),
    ),
]


def export(estimator: Any, data: Dataset) -> bytes:
    n_features = data.x_train.shape[1]
    initial = [(INPUT_NAME, FloatTensorType([None, n_features]))]
    if data.task == "classification":
        onx = to_onnx(
            estimator,
            initial_types=initial,
            options={id(estimator): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        )
    else:
        onx = to_onnx(
            estimator,
            initial_types=initial,
            final_types=[("prediction", FloatTensorType([None, 1]))],
            target_opset=TARGET_OPSET,
        )
    return bytes(onx.SerializeToString())


def run_onnx(model_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs as the gateway computes them: one intra-op thread (tree ensembles sum per-thread
    partials, so another thread count moves the last bit, and a value on a bin edge with it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: x}), strict=True))


def metrics(task: str, y: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, float]:
    if task == "classification":
        proba = out["probabilities"]
        return {
            "accuracy": float(accuracy_score(y, out["label"])),
            "roc_auc": float(roc_auc_score(y, proba[:, 1])),
            "log_loss": float(log_loss(y, proba)),
        }
    pred = out["prediction"][:, 0]
    return {
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }


def numeric_profile(name: str, values: np.ndarray) -> dict[str, Any]:
    """Quantile bins of one numeric column.

    Edges are the reference's deciles and percentiles with repeated values removed (a column
    with many ties has fewer bins). Bin i counts values v with edges[i-1] <= v < edges[i]
    (``numpy.searchsorted(edges, v, side="right")``), the two outer bins are open-ended.
    """
    v = values.astype(np.float64)
    finite = v[np.isfinite(v)]
    out: dict[str, Any] = {"name": name, "kind": "numeric", "count": int(finite.size),
                           "missing": int(v.size - finite.size)}
    for label, qs in (("deciles", DECILES), ("percentiles", PERCENTILES)):
        edges = np.unique(np.percentile(finite, qs))
        counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
        out[label] = {"edges": edges.tolist(), "counts": counts.tolist()}
    out.update(
        mean=float(finite.mean()), std=float(finite.std()),
        min=float(finite.min()), max=float(finite.max()),
    )
    return out


def categorical_profile(name: str, values: np.ndarray) -> dict[str, Any]:
    categories, counts = np.unique(values, return_counts=True)
    return {
        "name": name, "kind": "categorical", "count": int(values.size),
        "categories": categories.tolist(), "counts": counts.tolist(),
    }


def column_profile(name: str, values: np.ndarray) -> dict[str, Any]:
    """Low-cardinality columns (at most MAX_CATEGORIES distinct values) are categorical."""
    if np.unique(values).size <= MAX_CATEGORIES:
        return categorical_profile(name, values)
    return numeric_profile(name, values)


def dump_profile(profile: dict[str, Any]) -> str:
    """JSON with one line per column: compact, yet a diff shows which column changed."""
    head = {k: v for k, v in profile.items() if k not in ("features", "outputs")}
    lines = [json.dumps(head)[:-1] + ","]
    for key in ("features", "outputs"):
        rows = [json.dumps(col, separators=(",", ":")) for col in profile[key]]
        comma = "," if key == "features" else ""
        lines.append(f' "{key}": [\n  ' + ",\n  ".join(rows) + "\n ]" + comma)
    return "\n".join(lines) + "\n}\n"


def output_profiles(task: str, out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    if task == "classification":
        return [
            categorical_profile("label", out["label"]),
            # The positive-class score; column 0 is its complement and carries nothing more.
            {**numeric_profile("probabilities", out["probabilities"][:, 1]), "column": 1},
        ]
    return [{**numeric_profile("prediction", out["prediction"][:, 0]), "column": 0}]


def signature(model_bytes: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    kinds = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(double)": "FP64"}

    def describe(arg: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        return {"name": arg.name, "datatype": kinds[arg.type], "shape": shape}

    return ([describe(a) for a in session.get_inputs()],
            [describe(a) for a in session.get_outputs()])


def build(spec: VersionSpec, data: Dataset) -> None:
    estimator = spec.make_estimator()
    estimator.fit(data.x_train, data.y_train)
    model_bytes = export(estimator, data)
    train_out = run_onnx(model_bytes, data.x_train)
    test_out = run_onnx(model_bytes, data.x_test)
    inputs, outputs = signature(model_bytes)

    folder = HERE / spec.model / spec.version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model_bytes)
    metadata = {
        "model": spec.model,
        "version": spec.version,
        "description": spec.description,
        "task": data.task,
        "dataset": f"sklearn.datasets.load_{data.name.replace('-', '_')}",
        "split": {"test_size": 0.2, "random_state": SEED,
                  "train_rows": len(data.y_train), "test_rows": len(data.y_test)},
        "feature_names": data.feature_names,
        "inputs": inputs,
        "outputs": outputs,
        "metrics": {"train": metrics(data.task, data.y_train, train_out),
                    "test": metrics(data.task, data.y_test, test_out)},
        "built_with": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                       "onnxruntime": ort.__version__, "target_opset": TARGET_OPSET},
    }
    profile = {
        "model": spec.model,
        "version": spec.version,
        "source": "training split",
        "rows": len(data.y_train),
        "features": [
            {**column_profile(name, data.x_train[:, i]), "input": INPUT_NAME, "column": i}
            for i, name in enumerate(data.feature_names)
        ],
        "outputs": output_profiles(data.task, train_out),
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (folder / "profile.json").write_text(dump_profile(profile))
    np.savez_compressed(folder / "reference.npz", inputs=data.x_train,
                        **{f"output_{k}": v for k, v in train_out.items()})
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metadata["metrics"]["test"].items())
    print(f"{spec.model}/{spec.version}: {spec.description}; held-out {shown}")


def main() -> None:
    datasets: dict[str, Dataset] = {}
    for spec in SPECS:
        if spec.model not in datasets:
            datasets[spec.model] = load_dataset(spec.model)
        build(spec, datasets[spec.model])


if __name__ == "__main__":
    main()
