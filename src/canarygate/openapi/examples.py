"""Examples for the document, made from what this gateway serves: a request its first model
answers (zeros of the baseline's input shapes), and admin calls naming that model's versions.
People read them; schemathesis sends them, so the state-changing calls reach real models."""

from __future__ import annotations

import math
from typing import Any

from canarygate.config import GatewayConfig, ModelConfig
from canarygate.runtime.tensors import TensorSpec

Inputs = dict[str, tuple[TensorSpec, ...]]  # a model's name -> its baseline's inputs


def zero(datatype: str) -> Any:
    return "" if datatype == "BYTES" else False if datatype == "BOOL" else 0


def one_row(spec: TensorSpec) -> tuple[list[int], list[Any]]:
    """A shape of one row (free dimensions set to 1) and its values, flat."""
    shape = [1, *(d if d > 0 else 1 for d in spec.shape[1:])] if spec.shape else [1]
    return shape, [zero(spec.datatype)] * math.prod(shape)


def v2_request(inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    tensors = []
    for spec in inputs:
        shape, data = one_row(spec)
        tensors.append({"name": spec.name, "shape": shape, "datatype": spec.datatype,
                        "data": data})
    return {"id": "example-1", "inputs": tensors}


def v1_request(inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    rows = {spec.name: one_row(spec)[1] for spec in inputs}
    if len(rows) == 1:
        return {"instances": list(rows.values())}
    return {"instances": [rows]}


def admin_requests(model: ModelConfig) -> dict[str, dict[str, Any]]:
    others = [v for v in model.versions if v != model.baseline]
    candidate = model.candidate or (others[0] if others else model.baseline)
    return {
        "StartRequest": {"candidate": candidate, "schedule": {"steps": [10, 50, 100]},
                         "reason": "example"},
        "WeightRequest": {"weight": 10, "reason": "example"},
        "Reason": {"reason": "example"},
        "RegisterRequest": {"version": "example", "reason": "example",
                            "path": model.versions[model.baseline].path},
    }


def request_examples(config: GatewayConfig, inputs: Inputs) -> dict[str, dict[str, Any]]:
    """Request examples by the name of their body's schema (empty with no model)."""
    if not config.models:
        return {}
    model = config.models[0]
    found: dict[str, dict[str, Any]] = admin_requests(model)
    if model.name in inputs:
        found["InferenceRequest"] = v2_request(inputs[model.name])
        found["V1Request"] = v1_request(inputs[model.name])
    found["FeedbackRequest"] = {"request_id": "example-1", "label": 1}
    return found
