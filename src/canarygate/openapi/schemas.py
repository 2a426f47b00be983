"""The OpenAPI document's component schemas (JSON Schema 2020-12, as OpenAPI 3.1 uses it): what
each route reads and answers. Data only; ``canarygate.openapi`` puts it together once at start.

Each schema says what the gateway really sends: a figure that can be missing is ``null``, and
so is one past float range (JSON has no infinity; the gateway writes those as ``null``).
"""

from __future__ import annotations

from typing import Any

from canarygate.config import NAME_PATTERN, RolloutConfig
from canarygate.drift.report import LEVELS as DRIFT_LEVELS
from canarygate.http.protocol import MAX_REQUEST_ID
from canarygate.rollout.gates import Verdict
from canarygate.rollout.state import Phase
from canarygate.runtime.tensors import DATATYPES

Schema = dict[str, Any]

FIGURE: Schema = {"type": ["number", "null"]}
COUNT: Schema = {"type": "integer", "minimum": 0}
TEXT: Schema = {"type": "string"}
NAME: Schema = {"type": "string", "pattern": NAME_PATTERN}
LEVELS = list(DRIFT_LEVELS)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], properties: dict[str, Schema], *, closed: bool = False,
        description: str = "") -> Schema:
    """An object schema; ``closed``: no other keys (what the gateway sends is all there is)."""
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def mapping(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def schedule_schema() -> Schema:
    """The rollout schedule as the config validates it (pydantic's own JSON Schema of
    ``RolloutConfig``), with the URL rule its validator adds."""
    schema = RolloutConfig.model_json_schema()
    for key in ("confirm_rollout", "confirm_promotion"):
        schema["properties"][key]["items"] = {"type": "string", "pattern": r"^https?://[^/\s]+"}
    schema["description"] = ("A rollout's schedule: the keys of a model's `rollout` in the config "
                             "(unknown keys are refused). Steps strictly increase, each in "
                             "(0, 100].")
    return schema


def tensor_schemas() -> dict[str, Schema]:
    """Tensors as the Open Inference Protocol (V2) writes them, and a model's metadata."""
    scalar: Schema = {"type": ["number", "boolean", "string"]}
    return {
        "Datatype": {"type": "string", "enum": list(DATATYPES)},
        "TensorMetadata": obj(["name", "datatype", "shape"], {
            "name": TEXT, "datatype": ref("Datatype"),
            "shape": array({"type": "integer", "minimum": -1},
                           description="-1 is a dimension of any size")}, closed=True),
        "TensorData": array({"anyOf": [scalar, {"type": "array"}]}, description=(
            "The values, flat in row-major order or nested as the shape; numbers for numeric "
            "datatypes, true/false for BOOL, strings for BYTES")),
        "ModelMetadata": obj(["name", "versions", "platform", "inputs", "outputs"], {
            "name": TEXT, "versions": array(TEXT), "platform": TEXT,
            "inputs": array(ref("TensorMetadata")), "outputs": array(ref("TensorMetadata"))},
            closed=True, description=(
                "The model's inputs and outputs; on the model's route `versions` lists every "
                "loaded version, on a version's route that version only")),
    }


def inference_schemas() -> dict[str, Schema]:
    """V2 inference request and response, KServe V1 instances and predictions."""
    binary_size: Schema = {"type": "integer", "minimum": 0}
    return {
        "InferenceRequest": obj(["inputs"], {
            "id": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID,
                   "description": "Printable ASCII; the answer's `id` and x-request-id when no "
                                  "request id header is sent"},
            "parameters": {"type": "object", "properties": {
                "binary_data_output": {"type": "boolean"}}},
            "inputs": array(ref("RequestInput"), minItems=1),
            "outputs": array(ref("RequestOutput"))}),
        "RequestInput": obj(["name", "shape", "datatype"], {
            "name": TEXT, "shape": array({"type": "integer", "minimum": 0}, maxItems=64),
            "datatype": ref("Datatype"),
            "parameters": {"type": "object", "properties": {"binary_data_size": binary_size}},
            "data": ref("TensorData")},
            description="`data`, or `parameters.binary_data_size` bytes of the binary part"),
        "RequestOutput": obj(["name"], {
            "name": TEXT, "parameters": {"type": "object", "properties": {
                "binary_data": {"type": "boolean"}}}}),
        "InferenceResponse": obj(["model_name", "model_version", "id", "outputs"], {
            "model_name": TEXT, "model_version": TEXT, "id": TEXT,
            "outputs": array(ref("ResponseOutput"))}, closed=True),
        "ResponseOutput": obj(["name", "datatype", "shape"], {
            "name": TEXT, "datatype": ref("Datatype"), "shape": array(COUNT),
            "data": array({"type": ["number", "boolean", "string", "null"]}, description=(
                "Flat, row-major; a value that is not finite is null (JSON has no NaN)")),
            "parameters": obj(["binary_data_size"], {"binary_data_size": binary_size})},
            closed=True),
        "V1Request": obj(["instances"], {"instances": array({}, minItems=1, description=(
            "One row per instance; for a model of several inputs, an object keyed by input "
            "name"))}),
        "V1Response": obj(["predictions"], {"predictions": {
            "type": ["array", "object"], "description": (
                "One prediction per instance (an object keyed by output name when several "
                "outputs are returned); an object of whole outputs when they share no batch "
                "axis")}}, closed=True),
    }


def feedback_schemas() -> dict[str, Schema]:
    item = obj(["request_id", "label"], {
        "request_id": {"type": "string", "minLength": 1},
        "label": {"anyOf": [{"type": "number"}, array({"type": "number"}, minItems=1)],
                  "description": "A finite number, or one per row of a batch prediction"}})
    score = obj(["labelled"], {"labelled": COUNT, "correct": COUNT, "accuracy": FIGURE,
                               "mae": FIGURE, "rmse": FIGURE})
    return {
        "FeedbackItem": item,
        "FeedbackRequest": {"anyOf": [
            ref("FeedbackItem"), array(ref("FeedbackItem")),
            obj(["feedback"], {"feedback": array(ref("FeedbackItem"))})]},
        "Scores": mapping(score) | {"description": "Per version: accuracy (classifiers) or "
                                                   "MAE and RMSE (regressors) so far"},
        "FeedbackResponse": obj(["model", "accepted", "results", "scores"], {
            "model": TEXT, "accepted": COUNT, "scores": ref("Scores"),
            "results": array(obj(["request_id", "status", "version"], {
                "request_id": TEXT, "status": {"type": "string",
                                               "enum": ["recorded", "duplicate"]},
                "version": TEXT, "correct": array({"type": "boolean"}),
                "abs_error": array(FIGURE)}))}, closed=True),
    }


def server_schemas() -> dict[str, Schema]:
    return {
        "Error": obj(["error"], {"error": {"type": "string", "description": "What is wrong"}},
                     closed=True, description="Every answer that is not a success"),
        "Live": obj(["live"], {"live": {"const": True}}, closed=True),
        "Ready": obj(["ready"], {"ready": {"const": True}}, closed=True),
        "ServerMetadata": obj(["name", "version", "extensions"], {
            "name": TEXT, "version": TEXT, "extensions": array(TEXT)}, closed=True),
        "ModelReady": obj(["name", "ready"], {"name": TEXT, "ready": {"const": True}},
                          closed=True),
        "V1ModelStatus": obj(["name", "ready"], {"name": TEXT, "ready": {"type": "boolean"}},
                             closed=True),
    }


def gate_schema() -> Schema:
    return obj(["gate", "verdict", "statistic", "threshold", "counts", "detail"], {
        "gate": TEXT, "verdict": {"type": "string", "enum": [v.value for v in Verdict]},
        "statistic": FIGURE, "threshold": FIGURE, "counts": {"type": "object"},
        "detail": TEXT})


def rollout_view_schema() -> Schema:
    """``GET /admin/rollouts/{model}``: the stored state and what the step has seen."""
    phase: Schema = {"type": "string", "enum": [p.value for p in Phase]}
    arm = obj(["requests", "errors", "p50_ms", "p95_ms", "labelled", "wrong"], {
        "requests": COUNT, "errors": COUNT, "p50_ms": FIGURE, "p95_ms": FIGURE,
        "labelled": COUNT, "wrong": COUNT})
    waiting = obj(["candidate_requests", "min_step_requests", "step_seconds",
                   "min_step_seconds", "text"], {
        "candidate_requests": COUNT, "min_step_requests": COUNT, "step_seconds": FIGURE,
        "min_step_seconds": FIGURE, "text": TEXT})
    return obj(["model", "baseline", "candidate", "phase", "step", "weight", "schedule",
                "revision", "reason", "versions", "steps", "step_counts", "step_number",
                "waiting", "last_verdicts", "feedback"], {
        "model": TEXT, "baseline": TEXT, "candidate": {"type": ["string", "null"]},
        "phase": phase, "resume_phase": {"anyOf": [phase, {"type": "null"}]},
        "step": {"type": "integer", "minimum": -1}, "weight": {"type": "number"},
        "schedule": ref("Schedule"), "revision": COUNT, "started_at": FIGURE,
        "step_started_at": FIGURE, "carried_log_e": mapping(FIGURE),
        "restarts_log_e": mapping(array(FIGURE)), "pending_log_e": mapping(FIGURE),
        "min_requests": {"type": ["integer", "null"]}, "tau_seconds": FIGURE,
        "tail_tau_seconds": FIGURE, "error_tau": FIGURE,
        "awaiting_confirmation": {"type": "boolean"}, "reason": TEXT,
        "figures": {"type": "object"}, "window": COUNT, "versions": array(TEXT),
        "steps": array({"type": "number"}),
        "step_counts": obj(["baseline", "candidate"], {"baseline": arm, "candidate": arm}),
        "shadow": obj(["pairs", "labelled", "agreements", "abs_diff_sum", "dropped"], {
            "pairs": COUNT, "labelled": {"type": "boolean"}, "agreements": COUNT,
            "abs_diff_sum": FIGURE, "dropped": COUNT}, closed=True), "tau_ms": FIGURE,
        "step_number": {"type": ["integer", "null"], "minimum": 1},
        "waiting": {"anyOf": [waiting, {"type": "null"}]},
        "last_verdicts": array(ref("GateResult")), "feedback": ref("Scores"),
        "estimated_accuracy": array({"allOf": [ref("Estimate"), obj(
            ["version", "variant", "realised_accuracy"], {
                "version": TEXT, "variant": TEXT, "realised_accuracy": FIGURE})]})})


def history_point_schema() -> Schema:
    """One controller tick of ``GET /admin/rollouts/{model}/history``."""
    gate = obj(["verdict", "statistic", "threshold"], {
        "verdict": {"type": "string", "enum": [v.value for v in Verdict]},
        "statistic": FIGURE, "threshold": FIGURE}, closed=True)
    traffic = obj(["version", "qps", "error_rate", "p50", "p95", "p99"], {
        "version": TEXT, "qps": FIGURE, "error_rate": FIGURE, "p50": FIGURE, "p95": FIGURE,
        "p99": FIGURE}, closed=True)
    drift = obj(["version", "levels", "psi"], {
        "version": TEXT, "levels": array({"type": "integer"}), "psi": array(FIGURE)},
        closed=True, description="Per input feature, in `drift_features`' order: level code "
                                 "(`level_codes`) and PSI")
    return obj(["t", "phase", "step", "weight", "baseline", "candidate", "observed_share",
                "variants", "gates", "agreement", "shadow_pairs", "feedback", "drift"], {
        "t": {"type": "number"}, "phase": TEXT, "step": {"type": "integer"},
        "weight": {"type": "number"}, "baseline": TEXT,
        "candidate": {"type": ["string", "null"]}, "observed_share": FIGURE,
        "variants": mapping(traffic), "gates": mapping(gate), "agreement": FIGURE,
        "shadow_pairs": COUNT, "feedback": mapping(obj([], {
            "accuracy": FIGURE, "mae": FIGURE}, closed=True)),
        "drift": mapping(drift)}, closed=True)


def decision_schema() -> Schema:
    """One entry of the decision log: a judgement, a person's action or a registration."""
    return obj(["time", "model", "action", "actor", "reason"], {
        "time": {"type": "number"}, "model": TEXT, "action": TEXT,
        "actor": {"type": "string", "description": "controller, or the admin token's name"},
        "reason": TEXT, "phase": TEXT, "phase_before": TEXT, "step": {"type": "integer"},
        "weight": {"type": "number"}, "weight_before": {"type": "number"},
        "baseline": TEXT, "candidate": {"type": ["string", "null"]}, "revision": COUNT,
        "gates": array(ref("GateResult")),
        "traffic": array(obj(["version", "variant", "requests", "qps"], {
            "version": TEXT, "variant": TEXT, "requests": COUNT, "qps": FIGURE,
            "error_rate": FIGURE, "mean_batch_rows": FIGURE, "p50_ms": FIGURE,
            "p99_ms": FIGURE}), description="What each variant served in the last minute "
                                             "(a judgement's)"),
        "version": TEXT, "path": TEXT})


def column_schema() -> Schema:
    """One column's drift figures (``psi``, ``ks``, p-values... as the column's kind has)."""
    return {**obj(["name", "kind", "window_size", "missing", "level"], {
        "name": TEXT, "kind": {"type": "string", "enum": ["numeric", "categorical"]},
        "window_size": COUNT, "missing": COUNT,
        "level": {"type": "string", "enum": LEVELS}}), "additionalProperties": FIGURE}


def comparison_schema() -> Schema:
    """The candidate's outputs against the baseline's over the same window."""
    side = obj(["version", "window_rows"], {"version": TEXT, "window_rows": COUNT},
               closed=True)
    return obj(["baseline", "candidate", "min_window", "outputs", "alerts", "state"], {
        "baseline": side, "candidate": side, "min_window": COUNT,
        "outputs": array(ref("ColumnScore")), "alerts": array(TEXT),
        "state": {"type": "string", "enum": LEVELS}}, closed=True)


def estimate_schema() -> Schema:
    return obj(["rows", "accuracy", "low", "high", "expected_wrong"], {
        "rows": COUNT, "accuracy": FIGURE, "low": FIGURE, "high": FIGURE,
        "expected_wrong": FIGURE}, description="Accuracy estimated from the model's own "
                                               "scores (no labels), with its 95 % interval")


def admin_schemas() -> dict[str, Schema]:
    return {
        "Schedule": schedule_schema(),
        "GateResult": gate_schema(),
        "RolloutView": rollout_view_schema(),
        "RolloutList": obj(["rollouts"], {"rollouts": array(ref("RolloutView"))}, closed=True),
        "Whoami": obj(["name", "role", "models"], {
            "name": TEXT, "role": {"type": "string", "enum": ["viewer", "operator"]},
            "models": array(TEXT)}, closed=True),
        "Decision": decision_schema(),
        "Decisions": obj(["model", "decisions"], {
            "model": TEXT, "decisions": array(ref("Decision"), description="Newest last")},
            closed=True),
        "History": obj(["model", "level_codes", "drift_features", "points"], {
            "model": TEXT, "level_codes": mapping({"type": "integer"}),
            "drift_features": mapping(array(TEXT)) | {
                "description": "Per variant: the input features whose drift points hold"},
            "points": array(ref("HistoryPoint"))}, closed=True),
        "HistoryPoint": history_point_schema(),
        "ColumnScore": column_schema(),
        "OutputComparison": comparison_schema(),
        "Estimate": estimate_schema(),
        "DriftVariant": obj(["version", "variant", "window_rows", "min_window", "features",
                             "outputs", "alerts", "state", "estimated_accuracy"], {
            "version": TEXT, "variant": TEXT, "window_rows": COUNT, "min_window": COUNT,
            "features": array(ref("ColumnScore")), "outputs": array(ref("ColumnScore")),
            "alerts": array(TEXT), "state": {"type": "string", "enum": LEVELS},
            "estimated_accuracy": {"anyOf": [ref("Estimate"), {"type": "null"}]}},
            closed=True),
        "Drift": obj(["model", "evaluated_at", "variants", "detectors"], {
            "model": TEXT, "evaluated_at": FIGURE, "variants": array(ref("DriftVariant")),
            "dropped_rows": COUNT,
            "output_comparison": {"anyOf": [ref("OutputComparison"), {"type": "null"}]},
            "detectors": {"type": ["object", "null"]}}),
        "Stats": obj(["model", "window_seconds", "variants"], {
            "model": TEXT, "window_seconds": {"type": "number"},
            "variants": array(obj(["version", "variant", "requests", "qps"], {
                "version": TEXT, "variant": TEXT, "requests": COUNT, "qps": FIGURE,
                "rows_per_second": FIGURE, "error_rate": FIGURE,
                "client_error_rate": FIGURE, "mean_batch_rows": FIGURE,
                "covered_seconds": FIGURE}))}, closed=True),
        "Versions": obj(["model", "versions"], {"model": TEXT, "versions": array(obj(
            ["version", "role", "path"], {"version": TEXT, "path": TEXT, "role": {
                "type": "string", "enum": ["baseline", "candidate", ""]}}))}, closed=True),
        "Registered": obj(["name", "version", "versions", "inputs", "outputs"], {
            "name": TEXT, "version": TEXT, "versions": array(TEXT), "platform": TEXT,
            "inputs": array(ref("TensorMetadata")), "outputs": array(ref("TensorMetadata"))}),
    }


def admin_request_schemas() -> dict[str, Schema]:
    """The admin writes' bodies."""
    reason: Schema = {"type": "string", "description": "Kept in the decision log"}
    return {
        "Reason": obj([], {"reason": reason}),
        "StartRequest": obj(["candidate"], {
            "candidate": {"type": ["string", "integer"], "description": "A loaded version"},
            "schedule": ref("Schedule"), "reason": reason,
            "replay": {"type": ["object", "string"], "description": (
                "A report of `canarygate replay`, or a file name under state_dir")},
            "require_replay": {"type": "boolean"}}),
        "WeightRequest": obj(["weight"], {
            "weight": {"type": "number", "minimum": 0, "maximum": 100}, "reason": reason}),
        "RegisterRequest": obj(["version", "path"], {
            "version": {"anyOf": [NAME, {"type": "integer"}]},
            "path": {"type": "string", "minLength": 1,
                     "description": "A folder under models_dir"},
            "reason": reason}),
    }


def all_schemas() -> dict[str, Schema]:
    return {**server_schemas(), **tensor_schemas(), **inference_schemas(),
            **feedback_schemas(), **admin_schemas(), **admin_request_schemas()}
