"""A binary classifier's accuracy estimated from its own scores, before any label arrives.

Confidence-based performance estimation (CBPE; docs/estimation.md has the derivation): fit an
isotonic map from the version's raw positive-class score to the share of positives, on a held-out
split with labels (``calibration.npz``). For a row with calibrated score p and predicted label
y', the chance the prediction is right is c = p when y' = 1, else 1 - p, so over n rows

    estimated accuracy = sum(c) / n,    expected wrong answers = n - sum(c).

Given the confidences, the rows' correctness are independent Bernoulli(c) draws, so the realised
accuracy has variance sum(c (1 - c)) / n^2; the interval is the estimate plus or minus z times
its square root (normal approximation to that Poisson-binomial). It is the spread of what the
labels will show if the calibration holds; it leaves out the calibration's own error, which a
small calibration split makes real (114 rows for the demo models).

The estimator keeps a histogram of confidences (for display) and, exactly, the sums above: an
update is one vectorised pass over a batch, a merge adds arrays, a read is O(bins). It holds no
rows, so a step window can be the merge of sub-windows, as the drift monitor's are.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from canarygate.errors import ConfigError
from canarygate.runtime.files import FolderRules

if TYPE_CHECKING:
    from canarygate.runtime.model import ModelVersion

Z95 = NormalDist().inv_cdf(0.975)
BINS = 20  # confidence histogram over [0, 1]


class Calibrator:
    """Isotonic (non-decreasing) least-squares map of raw scores to probabilities in [0, 1],
    by pool-adjacent-violators; between fitted scores it interpolates linearly, beyond them it
    holds the end values."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = x  # distinct raw scores, increasing
        self.y = y  # their fitted probabilities, non-decreasing

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> Calibrator:
        s = np.asarray(scores, dtype=np.float64).ravel()
        t = np.asarray(labels, dtype=np.float64).ravel()
        if s.size == 0 or s.size != t.size:
            raise ValueError(f"calibration needs as many labels as scores ({s.size}, {t.size})")
        # Tied scores must map to one value: pool them first, weighted by how many they are.
        x, index, weight = np.unique(s, return_inverse=True, return_counts=True)
        mean = np.bincount(index, weights=t) / weight
        return cls(x, np.clip(_pool_adjacent_violators(mean, weight.astype(np.float64)), 0, 1))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y))


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares: merge any block
    whose mean exceeds the next one's until none does (each merge is final, so O(n))."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        means.append(value)
        weights.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            weights[-2] = total
            sizes[-2] += sizes[-1]
            del means[-1], weights[-1], sizes[-1]
    return np.repeat(np.asarray(means), sizes)


@dataclass(frozen=True)
class Estimate:
    rows: int
    accuracy: float | None  # None before any row
    low: float | None
    high: float | None
    expected_wrong: float

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "accuracy": self.accuracy, "low": self.low,
                "high": self.high, "expected_wrong": self.expected_wrong}


class AccuracyEstimator:
    """Estimated accuracy of one version's answers so far (see the module docstring).

    ``update`` takes a batch's raw positive-class scores and predicted labels; ``update_outputs``
    takes the output tensors of an answer as the runtime returns them.
    """

    __slots__ = ("calibrator", "counts", "label", "probabilities", "spread", "sums")

    def __init__(self, calibrator: Calibrator, *, label: str = "label",
                 probabilities: str = "probabilities") -> None:
        self.calibrator = calibrator
        self.label = label
        self.probabilities = probabilities
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.sums = np.zeros(BINS)  # sum of c per bin
        self.spread = np.zeros(BINS)  # sum of c (1 - c) per bin

    @classmethod
    def from_folder(cls, folder: Path, *, label: str = "label",
                    probabilities: str = "probabilities",
                    rules: FolderRules | None = None) -> AccuracyEstimator | None:
        """For a version folder with a ``calibration.npz`` (read as ``rules`` allow, by
        default inside the folder); None when it has none or is not a binary classifier."""
        rules = rules or FolderRules.within(folder)
        raw = rules.read(folder, "calibration.npz", f"version folder {folder}")
        if raw is None:
            return None
        try:
            return cls._from_npz(raw, label, probabilities, rules.limits.max_file_bytes)
        except (ValueError, KeyError, OSError, EOFError, TypeError, AttributeError,
                zipfile.BadZipFile) as exc:  # not an npz, or not ours
            raise ConfigError(f"version folder {folder}: calibration.npz cannot be used "
                              f"({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_npz(cls, raw: bytes, label: str, probabilities: str,
                  limit: int) -> AccuracyEstimator | None:
        with np.load(io.BytesIO(raw)) as data:
            # A compressed array can unpack to far more than the file: bounded as a file is.
            unpacked = sum(info.file_size for info in data.zip.infolist())
            if unpacked > limit:
                raise ValueError(f"its arrays unpack to {unpacked} bytes, over the limit of "
                                 f"{limit} (model_files.max_file_bytes)")
            key = f"output_{probabilities}"
            if key not in data or "labels" not in data or data[key].ndim != 2 \
                    or data[key].shape[1] != 2:
                return None
            calibrator = Calibrator.fit(data[key][:, 1], data["labels"])
        return cls(calibrator, label=label, probabilities=probabilities)

    @classmethod
    def for_version(cls, version: ModelVersion) -> AccuracyEstimator | None:
        """For a loaded version: its label output and its two-column float output (the
        class probabilities) by name; None when it has no such pair or no calibration."""
        if not version.classifier:
            return None
        label = version.outputs[version.label_index].name
        proba = next((o.name for o in version.outputs if o.datatype.startswith("FP")
                      and len(o.shape) == 2 and o.shape[1] == 2), None)
        if proba is None:
            return None
        return cls.from_folder(version.folder, label=label, probabilities=proba,
                               rules=version.rules)

    def fresh(self) -> AccuracyEstimator:
        """An empty estimator with the same calibration (a new window)."""
        return AccuracyEstimator(self.calibrator, label=self.label,
                                 probabilities=self.probabilities)

    def update(self, scores: np.ndarray, predicted: np.ndarray) -> None:
        p = self.calibrator(np.asarray(scores).ravel())
        c = np.where(np.asarray(predicted).ravel() == 1, p, 1.0 - p)
        index = np.minimum((c * BINS).astype(np.int64), BINS - 1)
        self.counts += np.bincount(index, minlength=BINS)
        self.sums += np.bincount(index, weights=c, minlength=BINS)
        self.spread += np.bincount(index, weights=c * (1.0 - c), minlength=BINS)

    def update_outputs(self, outputs: Mapping[str, np.ndarray]) -> None:
        """One answer's outputs (``{name: array}``); an answer without both is ignored."""
        proba, label = outputs.get(self.probabilities), outputs.get(self.label)
        if proba is None or label is None or proba.ndim != 2 or proba.shape[1] != 2:
            return
        self.update(proba[:, 1], label)

    def merge(self, other: AccuracyEstimator) -> None:
        self.counts += other.counts
        self.sums += other.sums
        self.spread += other.spread

    def read(self, z: float = Z95) -> Estimate:
        n = int(self.counts.sum())
        if n == 0:
            return Estimate(0, None, None, None, 0.0)
        total = float(self.sums.sum())
        accuracy = total / n
        half = z * float(np.sqrt(self.spread.sum())) / n
        return Estimate(n, accuracy, max(0.0, accuracy - half), min(1.0, accuracy + half),
                        n - total)

    def histogram(self) -> list[dict[str, float]]:
        """Rows per confidence bin, for display."""
        return [{"low": i / BINS, "high": (i + 1) / BINS, "rows": int(k)}
                for i, k in enumerate(self.counts)]
