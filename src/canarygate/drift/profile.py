"""A version's reference profile (what its training data looked like, column by column) and the
live counts binned on the profile's edges."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.drift.distances import estimated_sums
from canarygate.errors import ConfigError
from canarygate.runtime.files import FolderRules


@dataclass
class Column:
    """One profiled column: where its values come from and its reference counts."""

    name: str
    kind: str  # numeric or categorical
    source: str  # input or output tensor name
    column: int | None
    deciles: np.ndarray = field(default_factory=lambda: np.empty(0))
    decile_counts: np.ndarray = field(default_factory=lambda: np.empty(0))
    percentiles: np.ndarray = field(default_factory=lambda: np.empty(0))
    percentile_counts: np.ndarray = field(default_factory=lambda: np.empty(0))
    percentile_sums: np.ndarray = field(default_factory=lambda: np.empty(0))
    std: float = 1.0
    categories: np.ndarray = field(default_factory=lambda: np.empty(0))
    category_counts: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def from_profile(cls, entry: dict[str, Any], source: str) -> Column:
        col = cls(entry["name"], entry["kind"], source, entry.get("column"))
        if col.kind == "numeric":
            col.deciles = np.asarray(entry["deciles"]["edges"], dtype=np.float64)
            col.decile_counts = np.asarray(entry["deciles"]["counts"], dtype=np.float64)
            pct = entry["percentiles"]
            col.percentiles = np.asarray(pct["edges"], dtype=np.float64)
            col.percentile_counts = np.asarray(pct["counts"], dtype=np.float64)
            col.std = float(entry["std"])
            # Profiles keep counts, min, max and mean; per-bin sums when a build adds them.
            col.percentile_sums = (
                np.asarray(pct["sums"], dtype=np.float64) if "sums" in pct else estimated_sums(
                    col.percentiles, col.percentile_counts, float(entry["min"]),
                    float(entry["max"]), float(entry["mean"])))
        else:
            col.categories = np.asarray(entry["categories"], dtype=np.float64)
            # The reference saw no unseen category: its last bin is empty.
            col.category_counts = np.append(np.asarray(entry["counts"], np.float64), 0.0)
        return col

    def values(self, tensors: dict[str, np.ndarray]) -> np.ndarray | None:
        array = tensors.get(self.source)
        if array is None or array.dtype.kind not in "biuf":
            return None
        rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
        if self.column is not None and self.column >= rows.shape[1]:
            return None
        return rows[:, self.column or 0].astype(np.float64)


@dataclass
class Counts:
    """Live counts of one column over a sub-window (or a window, once summed)."""

    primary: np.ndarray  # decile bins, or categories plus an unseen bin
    percentiles: np.ndarray | None
    sums: np.ndarray | None  # the values' sum per percentile bin (for Wasserstein)
    missing: int = 0

    @classmethod
    def empty(cls, col: Column) -> Counts:
        if col.kind == "numeric":
            size = col.percentiles.size + 1
            return cls(np.zeros(col.deciles.size + 1), np.zeros(size), np.zeros(size))
        return cls(np.zeros(col.categories.size + 1), None, None)

    def add(self, col: Column, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        self.missing += values.size - finite.size
        if self.percentiles is not None and self.sums is not None:
            self.primary += np.bincount(np.searchsorted(col.deciles, finite, side="right"),
                                        minlength=self.primary.size)
            index = np.searchsorted(col.percentiles, finite, side="right")
            self.percentiles += np.bincount(index, minlength=self.percentiles.size)
            self.sums += np.bincount(index, weights=finite, minlength=self.sums.size)
            return
        index = np.searchsorted(col.categories, finite)
        index = np.minimum(index, col.categories.size - 1)
        known = col.categories[index] == finite
        self.primary += np.bincount(np.where(known, index, col.categories.size),
                                    minlength=self.primary.size)

    def merged(self, other: Counts) -> Counts:
        def plus(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else a + b

        return Counts(self.primary + other.primary, plus(self.percentiles, other.percentiles),
                      plus(self.sums, other.sums), self.missing + other.missing)


@dataclass
class Profile:
    features: list[Column]
    outputs: list[Column]

    @classmethod
    def load(cls, folder: Path, rules: FolderRules | None = None) -> Profile | None:
        """The folder's ``profile.json`` (None when it has none), read as ``rules`` allow
        (by default: inside the folder); ConfigError when it cannot be used."""
        data = (rules or FolderRules.within(folder)).read(folder, "profile.json",
                                                          f"version folder {folder}")
        if data is None:
            return None
        try:
            raw = json.loads(data)
            return cls([Column.from_profile(f, f.get("input", "input"))
                        for f in raw["features"]],
                       [Column.from_profile(o, o["name"]) for o in raw["outputs"]])
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ConfigError(f"version folder {folder}: profile.json is not a reference "
                              f"profile ({type(exc).__name__}: {exc})") from None
