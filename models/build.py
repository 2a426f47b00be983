"""Rebuild the demo models from datasets bundled with scikit-learn (no download).

Each model version lands in ``models/<model>/<version>/`` with:

- ``model.onnx``: the fitted estimator exported by skl2onnx (plain tensor outputs, no ZipMap);
- ``metadata.json``: task, feature names, input/output signature, training and held-out metrics;
- ``profile.json``: the reference profile the drift work compares live traffic against, per
  input feature and per output, computed on the training split;
- ``reference.npz``: the training split's inputs and this version's outputs on them (compressed);
- ``calibration.npz``: the held-out split's inputs, labels and this version's outputs on them
  (the rows its graph can answer), which label-free performance estimation calibrates on.
  Written with fixed zip timestamps, so it is byte-identical from run to run; ``python
  models/build.py --calibration`` writes only these, from the committed ``model.onnx`` files,
  without fitting anything again.

Everything is seeded, so running this twice with the same library versions gives the same models.
Run it with ``make models``. ``python models/build.py --wide DIR`` builds only the bench's
run-dominated model (``WIDE``, 34 MB, not a demo model: not committed) into
``DIR/breast-cancer/wide/``.
"""

from __future__ import annotations

import json
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import skl2onnx
import sklearn
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
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
from sklearn.neural_network import MLPClassifier
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
    flip_share: float = 0.0
    """Share of training labels flipped before fitting (a candidate that learned wrong)."""
    rewrite: Callable[[bytes], bytes] | None = None
    """Changes the exported graph (a candidate that fails at run time)."""


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
    # Genuinely bad candidates, for the canary work to roll back. No flag fakes anything.
    VersionSpec(
        "breast-cancer", "3", "LogisticRegression trained with 40 % of its labels flipped",
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        flip_share=0.4,
    ),
    VersionSpec(
        "breast-cancer", "4",
        "version 1's recipe, plus a lookup that fails at run time when mean radius >= 18",
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        rewrite=lambda model: fail_on_large_radius(model),
    ),
    VersionSpec(
        "breast-cancer", "5", "GradientBoostingClassifier, 20,000 trees of depth 2 (slow)",
        lambda: GradientBoostingClassifier(n_estimators=20_000, max_depth=2, learning_rate=0.005,
                                           subsample=0.8, random_state=SEED),
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


# The micro-batching bench's second model (loadtests/bench.py): a network whose weights (34 MB)
# outgrow the caches, so one row's run reads them all from memory (about 3 ms here) while a
# batch of 64 reads them once (about 0.3 ms a row). Its run, not HTTP, dominates a request.
WIDE = VersionSpec(
    "breast-cancer", "wide", "StandardScaler + MLPClassifier, three hidden layers of 2,048",
    lambda: make_pipeline(StandardScaler(), MLPClassifier(
        (2048, 2048, 2048), max_iter=5, random_state=SEED)),
)


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


def fail_on_large_radius(model_bytes: bytes) -> bytes:
    """Route the probabilities through a two-entry table indexed by floor(mean radius / 9).

    For mean radius >= 18 the index is out of the table's range and onnxruntime's Gather fails
    the whole run; below that the table adds zero and the answers are version 1's.
    """
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["probabilities_raw" if o == "probabilities" else o for o in node.output]
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], dtype=np.int64), "col_start"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "col_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "col_axis"),
        numpy_helper.from_array(np.array(9.0, dtype=np.float32), "radius_step"),
        numpy_helper.from_array(np.zeros(2, dtype=np.float32), "radius_table"),
    ])
    graph.node.extend([
        helper.make_node("Slice", [INPUT_NAME, "col_start", "col_end", "col_axis"], ["radius"]),
        helper.make_node("Div", ["radius", "radius_step"], ["radius_steps"]),
        helper.make_node("Floor", ["radius_steps"], ["radius_floor"]),
        helper.make_node("Cast", ["radius_floor"], ["radius_index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["radius_table", "radius_index"], ["radius_offset"], axis=0),
        helper.make_node("Add", ["probabilities_raw", "radius_offset"], ["probabilities"]),
    ])
    return bytes(model.SerializeToString())


def run_onnx(model_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs as the gateway computes them: one intra-op thread (tree ensembles sum per-thread
    partials, so another thread count moves the last bit, and a value on a bin edge with it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: x}), strict=True))


def _fails(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Which rows the model cannot answer (each run alone: one bad row fails a whole batch)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model_bytes, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    failed = np.zeros(len(x), dtype=bool)
    try:
        session.run(None, {INPUT_NAME: x})
        return failed
    except Exception:  # onnxruntime's errors are not exported as types
        pass
    for i in range(len(x)):
        try:
            session.run(None, {INPUT_NAME: x[i:i + 1]})
        except Exception:
            failed[i] = True
    return failed


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


def build(spec: VersionSpec, data: Dataset, root: Path = HERE) -> None:
    estimator = spec.make_estimator()
    y_fit = data.y_train
    if spec.flip_share:
        flip = np.random.default_rng(SEED).random(len(y_fit)) < spec.flip_share
        y_fit = np.where(flip, 1 - y_fit, y_fit)
    estimator.fit(data.x_train, y_fit)
    model_bytes = export(estimator, data)
    if spec.rewrite is not None:
        model_bytes = spec.rewrite(model_bytes)
    # Metrics and profiles come from the rows a failing graph can answer.
    fails = _fails(model_bytes, data.x_train)
    train_out = run_onnx(model_bytes, data.x_train[~fails])
    test_fails = _fails(model_bytes, data.x_test)
    test_out = run_onnx(model_bytes, data.x_test[~test_fails])
    inputs, outputs = signature(model_bytes)

    folder = root / spec.model / spec.version
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
        "metrics": {"train": metrics(data.task, data.y_train[~fails], train_out),
                    "test": metrics(data.task, data.y_test[~test_fails], test_out)},
        "failing_share": {"train": float(fails.mean()), "test": float(test_fails.mean())},
        "built_with": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                       "onnxruntime": ort.__version__, "target_opset": TARGET_OPSET},
    }
    profile = {
        "model": spec.model,
        "version": spec.version,
        "source": "training split",
        "rows": int((~fails).sum()),
        "features": [
            {**column_profile(name, data.x_train[~fails, i]), "input": INPUT_NAME, "column": i}
            for i, name in enumerate(data.feature_names)
        ],
        "outputs": output_profiles(data.task, train_out),
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (folder / "profile.json").write_text(dump_profile(profile))
    np.savez_compressed(folder / "reference.npz", inputs=data.x_train[~fails],
                        **{f"output_{k}": v for k, v in train_out.items()})
    write_calibration(folder, model_bytes, data)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metadata["metrics"]["test"].items())
    print(f"{spec.model}/{spec.version}: {spec.description}; held-out {shown}")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``numpy.savez_compressed``, with a fixed timestamp on every member: numpy stamps
    them with the time of writing, so two builds of the same arrays would differ."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array),
                                          allow_pickle=False)


def write_calibration(folder: Path, model_bytes: bytes, data: Dataset) -> None:
    """The held-out split with its labels and this version's outputs: the reference split
    reference.npz holds is the one the model was fitted on, so its scores there are
    overconfident and would calibrate nothing."""
    fails = _fails(model_bytes, data.x_test)
    out = run_onnx(model_bytes, data.x_test[~fails])
    save_npz(folder / "calibration.npz", {
        "inputs": data.x_test[~fails], "labels": data.y_test[~fails],
        **{f"output_{k}": v for k, v in out.items()}})


def main() -> None:
    if sys.argv[1:2] == ["--wide"]:
        with warnings.catch_warnings():  # five epochs are enough here: it is not converged
            warnings.simplefilter("ignore", ConvergenceWarning)
            build(WIDE, load_dataset(WIDE.model), Path(sys.argv[2]))
        return
    datasets: dict[str, Dataset] = {}
    for spec in SPECS:
        if spec.model not in datasets:
            datasets[spec.model] = load_dataset(spec.model)
        if "--calibration" in sys.argv[1:]:
            folder = HERE / spec.model / spec.version
            write_calibration(folder, (folder / "model.onnx").read_bytes(), datasets[spec.model])
            print(f"{spec.model}/{spec.version}: wrote calibration.npz")
        else:
            build(spec, datasets[spec.model])


if __name__ == "__main__":
    main()
