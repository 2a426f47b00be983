"""One servable model version: its onnxruntime session, its declared signature, input checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from canarygate.config import BatchingConfig
from canarygate.errors import BadRequest, ConfigError, ModelFailure
from canarygate.runtime.files import METADATA_FILE, MODEL_FILE, FolderRules
from canarygate.runtime.graph import check_model
from canarygate.runtime.tensors import DATATYPES, ONNX_TYPES, Tensor, TensorSpec


def _spec(arg: Any, what: str, where: str) -> TensorSpec:
    datatype = ONNX_TYPES.get(arg.type)
    if datatype is None:
        raise ConfigError(
            f"{where}: {what} {arg.name!r} has type {arg.type}, which canarygate cannot serve "
            "(export classifiers with zipmap=False so outputs are plain tensors)"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _metadata(raw: bytes | None, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        metadata = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise ConfigError(f"{where}: metadata.json is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: metadata.json must hold a JSON object")
    return metadata


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class ModelVersion:
    """A loaded version. ``feeds`` checks a request against the signature; ``run`` executes."""

    def __init__(
        self,
        model: str,
        version: str,
        folder: Path,
        session: ort.InferenceSession,
        metadata: dict[str, Any],
        *,
        max_batch_size: int,
        allow_non_finite: bool,
        batching: BatchingConfig | None = None,
        rules: FolderRules | None = None,
    ) -> None:
        where = f"model {model!r} version {version!r}"
        self.model = model
        self.version = version
        self.folder = folder
        self.rules = rules or FolderRules.within(folder)  # how its other files may be read
        self.metadata = metadata
        self.max_batch_size = max_batch_size
        self.allow_non_finite = allow_non_finite
        self._session = session
        self.inputs = tuple(_spec(a, "input", where) for a in session.get_inputs())
        self.outputs = tuple(_spec(a, "output", where) for a in session.get_outputs())
        self._inputs_by_name = {s.name: s for s in self.inputs}
        self.output_names = tuple(s.name for s in self.outputs)
        self._expected = ", ".join(self._inputs_by_name)
        # What feedback and shadow comparisons judge, whatever outputs a client asked for: a
        # classifier's label (its first integer output), else a regressor's first output.
        labels = [i for i, o in enumerate(self.outputs) if o.datatype.startswith(("INT", "UINT",
                                                                               "BOOL"))]
        self.label_index = labels[0] if labels else 0
        self.classifier = bool(labels)
        # Rows can be stacked only when every input and output is batched on its first axis.
        batchable = all(s.shape and s.shape[0] == -1 for s in self.inputs + self.outputs)
        self.batching = (batching if batching is not None and batching.max_wait_us > 0
                         and batchable else None)

    @classmethod
    def load(
        cls,
        model: str,
        version: str,
        folder: Path,
        *,
        rules: FolderRules | None = None,
        intra_op_threads: int = 1,
        max_batch_size: int = 1024,
        allow_non_finite: bool = False,
        batching: BatchingConfig | None = None,
        log_severity: int = 3,
    ) -> ModelVersion:
        """The version in ``folder``, its files read as ``rules`` allow (by default: inside
        the folder, with the default limits); ConfigError names what is wrong. onnxruntime
        logs at ``log_severity`` and above (3: errors; 4: fatal only)."""
        where = f"model {model!r} version {version!r}"
        rules = rules or FolderRules.within(folder)
        onnx_bytes = rules.read(folder, MODEL_FILE, where)
        if onnx_bytes is None:
            raise ConfigError(f"{where}: no model.onnx in {folder}")
        # Before onnxruntime creates a session: what loading would make, bounded.
        check_model(onnx_bytes, rules.limits.max_constant_bytes, where)
        metadata = _metadata(rules.read(folder, METADATA_FILE, where), where)
        rules.check_later_files(folder, where)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = log_severity
        try:
            # From the bytes checked, not the path: what runs is what was inspected.
            session = ort.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            raise ConfigError(f"{where}: onnxruntime cannot load {folder / MODEL_FILE}: "
                              f"{exc}") from None
        return cls(
            model, version, folder, session, metadata,
            max_batch_size=max_batch_size, allow_non_finite=allow_non_finite,
            batching=batching, rules=rules,
        )

    def example_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """Zero-filled inputs of ``rows`` rows (empty strings for text), for a warm-up run; a
        free dimension other than the first is 1, and a model without a batch axis gets one
        example."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = tuple(1 if d == -1 else d for d in spec.shape)
            if spec.shape and spec.shape[0] == -1:
                shape = (min(rows, self.max_batch_size), *shape[1:])
            dtype = DATATYPES[spec.datatype]
            feeds[spec.name] = (np.full(shape, "", dtype=np.object_) if spec.datatype == "BYTES"
                                else np.zeros(shape, dtype=dtype))
        return feeds

    def feeds(self, tensors: list[Tensor]) -> dict[str, np.ndarray]:
        """Check request tensors against the declared inputs; return onnxruntime's feed dict."""
        feeds: dict[str, np.ndarray] = {}
        for tensor in tensors:
            spec = self._inputs_by_name.get(tensor.name)
            if spec is None:
                raise BadRequest(
                    f"unknown input {tensor.name!r}; model {self.model!r} expects: {self._expected}"
                )
            if tensor.name in feeds:
                raise BadRequest(f"input {tensor.name!r} is given more than once")
            feeds[tensor.name] = self._check(spec, tensor)
        missing = [name for name in self._inputs_by_name if name not in feeds]
        if missing:
            raise BadRequest(f"missing input {missing[0]!r}; model {self.model!r} expects: "
                             f"{self._expected}")
        return feeds

    def _check(self, spec: TensorSpec, tensor: Tensor) -> np.ndarray:
        if tensor.datatype != spec.datatype:
            raise BadRequest(
                f"input {spec.name!r} has datatype {tensor.datatype}, "
                f"model expects {spec.datatype}"
            )
        data = tensor.data
        shape = data.shape
        if len(shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
        ):
            raise BadRequest(
                f"input {spec.name!r} has shape {_shape_text(shape)}, "
                f"model expects {_shape_text(spec.shape)} (-1 is any size)"
            )
        if spec.shape and spec.shape[0] == -1:
            if shape[0] == 0:
                raise BadRequest(f"input {spec.name!r} has no rows")
            if shape[0] > self.max_batch_size:
                raise BadRequest(
                    f"input {spec.name!r} has a batch of {shape[0]} rows, "
                    f"over the maximum of {self.max_batch_size}"
                )
        if not self.allow_non_finite and data.dtype.kind == "f" and not np.isfinite(data).all():
            first = np.argwhere(~np.isfinite(data))[0]
            raise BadRequest(
                f"input {spec.name!r} contains NaN or infinity (at index {first.tolist()}); "
                f"model {self.model!r} does not accept non-finite values"
            )
        return data

    def select_outputs(self, names: list[str] | None) -> tuple[str, ...]:
        if names is None:
            return self.output_names
        for name in names:
            if name not in self.output_names:
                raise BadRequest(
                    f"unknown output {name!r}; model {self.model!r} has: "
                    + ", ".join(self.output_names)
                )
        return tuple(names)

    def run(self, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> list[np.ndarray]:
        """Run the session (blocking: call it off the event loop)."""
        try:
            results = self._session.run(list(names), feeds)
        except Exception as exc:  # onnxruntime's failures are not exported as types
            raise ModelFailure(
                f"model {self.model!r} version {self.version!r} failed: {exc}"
            ) from exc
        return [np.asarray(r) for r in results]

    def describe(self) -> dict[str, Any]:
        """V2 model metadata for this version."""
        return {
            "name": self.model,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [s.as_json() for s in self.inputs],
            "outputs": [s.as_json() for s in self.outputs],
        }
