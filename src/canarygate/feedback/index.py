"""Recent predictions by request id, and what feedback said of them.

The request path adds each answered prediction to a bounded index (a ring of slots: O(1) to
add, the oldest evicted past ``max_entries``); entries older than ``ttl_seconds`` no longer
take feedback. A label joins its prediction once: the same label again changes nothing, a
different one is refused. Per version the book keeps accuracy (classifiers) or error
(regressors) of the labelled predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from canarygate.errors import BadRequest, Conflict, NotFound


class Prediction(NamedTuple):
    """What feedback may later judge, as the feedback path reads an index entry."""

    time: float
    model: str
    version: str
    variant: str
    classifier: bool
    predicted: tuple[float, ...]  # one value per row: the class label, or the regressor's output


class Joined(NamedTuple):
    """A feedback item joined to the prediction it answers."""

    prediction: Prediction
    request_id: str
    label: tuple[float, ...]
    errors: list[float]  # per row: 1.0 wrong, 0.0 right (classifiers), or the absolute error
    outcome: str  # "recorded", or "duplicate" for a label given before


Checked = tuple[Prediction, str, tuple[float, ...]]  # prediction, request id, label


def row_errors(prediction: Prediction, label: tuple[float, ...]) -> list[float]:
    """Per row, how far the prediction was from its label: 0/1 for a classifier's wrong
    answers, the absolute error for a regressor."""
    pairs = zip(prediction.predicted, label, strict=True)
    if prediction.classifier:
        return [0.0 if float(p) == t else 1.0 for p, t in pairs]
    return [abs(float(p) - t) for p, t in pairs]


def packed(values: np.ndarray) -> bytes | tuple[Any, ...]:
    """One value per row, as the index keeps them: numbers as float64 bytes (one C call, and
    nothing for the garbage collector to track); anything else (a string label) as a tuple."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False).tobytes()
    return tuple(values.tolist())


@dataclass
class VersionScore:
    labelled: int = 0  # rows with a label
    correct: int = 0  # classifiers
    abs_error: float = 0.0  # regressors: sums, for the mean absolute and squared errors
    sq_error: float = 0.0

    def as_json(self, classifier: bool) -> dict[str, Any]:
        n = self.labelled
        if classifier:
            return {"labelled": n, "correct": self.correct,
                    "accuracy": self.correct / n if n else None}
        return {"labelled": n, "mae": self.abs_error / n if n else None,
                "rmse": math.sqrt(self.sq_error / n) if n else None}


@dataclass
class FeedbackBook:
    """The index is a ring of ``max_entries`` slots in parallel lists, and a dict from request
    id to slot; a new prediction takes the oldest slot. Remembering one stores references into
    lists that exist from the start: it allocates nothing the garbage collector tracks. (A
    tuple per entry would, and under load those tuples alone set off a young collection every
    few seconds, each tens of milliseconds long on a hundred thousand scattered entries.)"""

    max_entries: int = 100_000
    ttl_seconds: float = 3600.0
    slots: dict[str, int] = field(default_factory=dict)  # request id -> its slot
    labels: dict[str, tuple[float, ...]] = field(default_factory=dict)  # joined, by request id
    scores: dict[tuple[str, str], VersionScore] = field(default_factory=dict)
    classifiers: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.max_entries
        self._ids: list[str | None] = [None] * n
        self._times: list[float] = [0.0] * n
        self._models: list[str] = [""] * n
        self._versions: list[str] = [""] * n
        self._variants: list[str] = [""] * n
        self._classifier: list[bool] = [False] * n
        self._predicted: list[bytes | tuple[Any, ...]] = [b""] * n
        self._next = 0  # the slot the next prediction takes

    def __len__(self) -> int:
        return len(self.slots)

    def reserve(self) -> None:
        """Turn the ring over twice with placeholders, so the id dict's hash table has at
        start the size it keeps when full and turning over: a dict does not shrink when keys
        leave, and the first time the oldest leave as new ones arrive it grows its table, so
        memory would step up well after start instead of at it. Placeholder ids start with
        NUL, which no request id may hold; they age out as predictions arrive."""
        for i in range(2 * self.max_entries):  # as long as a generated id
            self.remember(f"\x00{i:032x}", 0.0, "", "", "", False, b"")

    def remember(self, request_id: str, time: float, model: str, version: str, variant: str,
                 classifier: bool, predicted: bytes | tuple[Any, ...]) -> None:
        """Index an answered prediction (``predicted`` from :func:`packed`), evicting the
        oldest past ``max_entries``."""
        slot, slots, labels = self._next, self.slots, self.labels
        gone = self._ids[slot]
        if gone is not None and slots.get(gone) == slot:  # else its id was used again since
            del slots[gone]
            if labels:
                labels.pop(gone, None)
        if labels:  # a request id used again starts unlabelled
            labels.pop(request_id, None)
        slots[request_id] = slot
        self._ids[slot] = request_id
        self._times[slot] = time
        self._models[slot] = model
        self._versions[slot] = version
        self._variants[slot] = variant
        self._classifier[slot] = classifier
        self._predicted[slot] = predicted
        self._next = slot + 1 if slot + 1 < self.max_entries else 0

    def get(self, request_id: str) -> Prediction | None:
        """The indexed prediction that ``request_id`` answered, if it is still indexed."""
        slot = self.slots.get(request_id)
        if slot is None:
            return None
        values = self._predicted[slot]
        predicted = (tuple(np.frombuffer(values, dtype=np.float64).tolist())
                     if isinstance(values, bytes) else values)
        return Prediction(self._times[slot], self._models[slot], self._versions[slot],
                          self._variants[slot], self._classifier[slot], predicted)

    def apply(self, model: str, items: list[Any], now: float) -> list[Joined]:
        """Check every item, then join them all (or none)."""
        return self.join(self.check(model, items, now))

    def check(self, model: str, items: list[Any], now: float) -> list[Checked]:
        """Every item parsed and matched to its prediction (NotFound, BadRequest or Conflict
        for the first that cannot join); nothing is joined yet."""
        checked: list[Checked] = []
        seen: dict[str, tuple[float, ...]] = {}
        for i, item in enumerate(items):
            rid, label = _parse(item, i)
            prediction = self.get(rid)
            if prediction is None or prediction.model != model:
                raise NotFound(f"no recent prediction of {model!r} has request id {rid!r} "
                               f"(unknown, or evicted from the last {self.max_entries})")
            if now - prediction.time > self.ttl_seconds:
                raise NotFound(f"the prediction {rid!r} is older than {self.ttl_seconds:g} s: "
                               "its feedback window has closed")
            if len(label) != len(prediction.predicted):
                raise BadRequest(f"item {i}: the prediction {rid!r} has "
                                 f"{len(prediction.predicted)} rows, the label {len(label)}")
            earlier = self.labels.get(rid, seen.get(rid))
            if earlier is not None and earlier != label:
                raise Conflict(f"the prediction {rid!r} already has a different label")
            seen[rid] = label
            checked.append((prediction, rid, label))
        return checked

    def join(self, checked: list[Checked]) -> list[Joined]:
        """Join checked labels: a label this book has seen before is a duplicate (it counts
        once); the others are scored."""
        out = []
        for prediction, rid, label in checked:
            errors = row_errors(prediction, label)
            if rid in self.labels:
                out.append(Joined(prediction, rid, label, errors, "duplicate"))
                continue
            self.labels[rid] = label
            self._score(prediction, errors)
            out.append(Joined(prediction, rid, label, errors, "recorded"))
        return out

    def _score(self, prediction: Prediction, errors: list[float]) -> None:
        key = (prediction.model, prediction.version)
        score = self.scores.setdefault(key, VersionScore())
        self.classifiers[prediction.model] = prediction.classifier
        score.labelled += len(errors)
        if prediction.classifier:
            score.correct += len(errors) - int(sum(errors))
        else:
            score.abs_error += sum(errors)
            score.sq_error += sum(e * e for e in errors)

    def summary(self, model: str) -> dict[str, Any]:
        classifier = self.classifiers.get(model, True)
        return {version: score.as_json(classifier)
                for (m, version), score in sorted(self.scores.items()) if m == model}


def _parse(item: Any, i: int) -> tuple[str, tuple[float, ...]]:
    if not isinstance(item, dict):
        raise BadRequest(f"item {i}: feedback must be an object with 'request_id' and 'label'")
    rid, label = item.get("request_id"), item.get("label")
    if not isinstance(rid, str) or not rid:
        raise BadRequest(f"item {i}: 'request_id' must be a non-empty string")
    values: list[Any] = label if isinstance(label, list) else [label]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool)
                             and math.isfinite(v) for v in values):
        raise BadRequest(f"item {i}: 'label' must be a finite number, or a list of them "
                         "(one per row of the prediction)")
    return rid, tuple(float(v) for v in values)
