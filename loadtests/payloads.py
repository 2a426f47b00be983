"""Request bodies for the load tests: V2 infer JSON of one real row of a demo model.

Rows come from ``models/<model>/<version>/reference.npz`` (key ``inputs``, the training split),
so every server sees the same realistic inputs and the drift monitor sees in-distribution data.

``python -m loadtests.payloads breast-cancer > bodies.txt`` writes one body a line (wrk's input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def rows(model: str, version: str = "1", limit: int | None = None) -> np.ndarray:
    """Input rows (float32, one per request) of a model's reference split."""
    with np.load(MODELS / model / version / "reference.npz") as data:
        x = np.asarray(data["inputs"], dtype=np.float32)
    return x[:limit] if limit else x


def expected_labels(model: str, version: str, models: Path = MODELS) -> np.ndarray | None:
    """What ``version`` (in ``models``) answers on ``rows(model)``, for checking a server's
    replies; None when its reference split holds other rows (a version built on part of them)
    or no labels."""
    with np.load(models / model / version / "reference.npz") as data:
        if "output_label" not in data.files or not np.array_equal(
                np.asarray(data["inputs"], dtype=np.float32), rows(model)):
            return None
        return np.asarray(data["output_label"])


def input_name(model: str, version: str = "1") -> str:
    meta = json.loads((MODELS / model / version / "metadata.json").read_text())
    return str(meta["inputs"][0]["name"])


def v2_body(row: np.ndarray, name: str = "input") -> bytes:
    # Shortest text that reads back as the same float32: small bodies, exact values.
    values = ",".join(np.format_float_positional(v, unique=True, trim="0") for v in row)
    return (f'{{"inputs":[{{"name":"{name}","shape":[1,{len(row)}],'
            f'"datatype":"FP32","data":[{values}]}}]}}').encode()


def v2_bodies(model: str, limit: int | None = 256) -> list[bytes]:
    name = input_name(model)
    return [v2_body(row, name) for row in rows(model, limit=limit)]


def write_bodies(model: str, path: Path, limit: int | None = 256) -> Path:
    path.write_bytes(b"\n".join(v2_bodies(model, limit)) + b"\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description="Print V2 infer bodies, one a line.")
    parser.add_argument("model", nargs="?", default="breast-cancer")
    parser.add_argument("--limit", type=int, default=256)
    args = parser.parse_args()
    sys.stdout.buffer.write(b"\n".join(v2_bodies(args.model, args.limit)) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
