"""Sequential change detectors: DDM, EDDM, ADWIN and Page-Hinkley, in pure Python.

They reproduce river 0.26.1 decision for decision (docs/statistics.md §4),
so river serves as the test oracle while the gateway does not depend on it. Shared conventions:

- `update(x)` feeds one value and returns `drift_detected`.
- Reset is lazy, as in river: after a drift the state that raised it stays readable (`state()`,
  ADWIN's `width`) until the next `update`, which clears everything before using its value.
- `n_detections` counts drifts since creation; it is not cleared by those resets.

Several updates multiply by `1.0 / n` instead of dividing by `n`: that is how river's running
mean rounds, and matching it bit for bit keeps the detection indices identical.

Four detectors in one module of a little over 400 lines: each is short, they share the base
class and its conventions, and tests/test_detectors.py checks them together against river.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Protocol


class Detector(Protocol):
    name: str  # "ddm", "eddm", "adwin", "page_hinkley"
    drift_detected: bool  # set by the last update
    warning_detected: bool  # DDM/EDDM; always False for the others
    n_detections: int  # drifts since creation

    def update(self, x: float) -> bool: ...

    def state(self) -> dict[str, Any]: ...


def _check(ok: bool, name: str, requirement: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {requirement}, got {value!r}")


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value: object) -> bool:
    # Rejects NaN/inf too: a NaN threshold would silently never fire.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Base(ABC):
    """Flags, counters and the lazy reset shared by all detectors."""

    name = ""

    def __init__(self) -> None:
        self.drift_detected = False
        self.warning_detected = False
        self.n_detections = 0
        self.n_seen = 0  # since creation; each detector also counts samples since its reset

    def update(self, x: float) -> bool:
        if self.drift_detected:
            self.drift_detected = False
            self.warning_detected = False
            self._reset()
        self.n_seen += 1
        if self._step(x):
            self.drift_detected = True
            self.n_detections += 1
        return self.drift_detected

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples_seen": self.n_seen,
            "drift": self.drift_detected,
            "warning": self.warning_detected,
            "n_detections": self.n_detections,
        }

    @abstractmethod
    def _reset(self) -> None: ...

    @abstractmethod
    def _step(self, x: float) -> bool:
        """Absorb x; return True on drift (and set warning_detected where it applies)."""


class DDM(_Base):
    """Drift Detection Method (Gama, Medas, Castillo, Rodrigues, SBIA 2004).

    Input: 1 = error, 0 = success. With p the running error rate after n samples and
    s = sqrt(p (1 - p) / n), keep (p_min, s_min) where p + s was smallest (ties update).
    Once n > warm_start: warning if p + s > p_min + warning_threshold * s_min, drift if
    p + s > p_min + drift_threshold * s_min (a drift clears the warning). The minimum is
    anchored on all history since the last reset, so reset DDM at each deploy.
    """

    name = "ddm"

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ) -> None:
        _check(_is_int(warm_start, 0), "warm_start", "an integer >= 0", warm_start)
        _check(_is_real(warning_threshold) and warning_threshold > 0,
               "warning_threshold", "a finite number > 0", warning_threshold)
        _check(_is_real(drift_threshold) and drift_threshold >= warning_threshold,
               "drift_threshold", "a finite number >= warning_threshold", drift_threshold)
        super().__init__()
        self.warm_start = warm_start
        self.warning_threshold = float(warning_threshold)
        self.drift_threshold = float(drift_threshold)
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._p = 0.0
        self._p_min = self._s_min = self._ps_min = math.inf

    def _step(self, x: float) -> bool:
        self._n += 1
        n = self._n
        self._p += (1.0 / n) * (x - self._p)
        p = self._p
        s = math.sqrt(p * (1 - p) / n)
        ps = p + s
        if n <= self.warm_start:
            return False
        if ps <= self._ps_min:
            self._p_min, self._s_min, self._ps_min = p, s, ps
        if ps > self._p_min + self.drift_threshold * self._s_min:
            self.warning_detected = False
            return True
        self.warning_detected = ps > self._p_min + self.warning_threshold * self._s_min
        return False

    def state(self) -> dict[str, Any]:
        seen = self._n > self.warm_start
        return super().state() | {
            "samples": self._n,
            "error_rate": self._p,
            "p_min": self._p_min if seen else None,
            "s_min": self._s_min if seen else None,
        }


class EDDM(_Base):
    """Early Drift Detection Method (Baena-Garcia et al., 4th Int. Workshop on Knowledge
    Discovery from Data Streams, 2006).

    Input: 1 = error, anything else = success. Tracks the distance (in samples) between
    consecutive errors: its running mean p' and sample standard deviation s', and the largest
    p' + 2 s' seen. At each error, once more than warm_start samples and more than warm_start
    errors have arrived and p' + 2 s' is not a new maximum, level = (p' + 2 s') / max:
    drift if level < beta, else warning if level < alpha, else no warning. Between errors the
    warning keeps its last value. With the defaults it raises many false alarms on stationary
    streams (§3.2); alpha=0.8, beta=0.75 is calmer.
    """

    name = "eddm"

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9) -> None:
        _check(_is_int(warm_start, 0), "warm_start", "an integer >= 0", warm_start)
        _check(_is_real(beta) and 0 < beta <= 1, "beta", "a number in (0, 1]", beta)
        _check(_is_real(alpha) and beta <= alpha <= 1, "alpha", "a number in [beta, 1]", alpha)
        super().__init__()
        self.warm_start = warm_start
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._n_errors = 0
        self._last_error = 0
        self._dist_mean = 0.0
        self._dist_m2 = 0.0  # sum of squared deviations of the distances (Welford)
        self._p2s_max = -1.0

    def _step(self, x: float) -> bool:
        self._n += 1
        if x != 1:
            return False
        self._n_errors += 1
        dist = self._n - self._last_error
        self._last_error = self._n
        old_mean = self._dist_mean
        self._dist_mean += (1.0 / self._n_errors) * (dist - old_mean)
        self._dist_m2 += (dist - old_mean) * (dist - self._dist_mean)
        if self._n <= self.warm_start:
            return False
        var = self._dist_m2 / (self._n_errors - 1) if self._n_errors > 1 else 0.0
        p2s = self._dist_mean + 2 * var**0.5  # ** 0.5, not sqrt: same rounding as river
        if p2s > self._p2s_max:
            self._p2s_max = p2s
            return False
        if self._n_errors <= self.warm_start:
            return False
        level = p2s / self._p2s_max
        if level < self.beta:
            return True
        self.warning_detected = level < self.alpha
        return False

    def state(self) -> dict[str, Any]:
        return super().state() | {
            "samples": self._n,
            "errors": self._n_errors,
            "mean_distance": self._dist_mean,
        }


class ADWIN(_Base):
    """ADaptive WINdowing (Bifet & Gavalda, SIAM SDM 2007), the ADWIN2 bucket variant.

    Keeps a window W of recent values, compressed into an exponential histogram: row i holds
    up to max_buckets buckets of 2^i values (sum and sum of squared deviations); one more
    merges the row's two oldest into row i + 1. Every `clock` updates, once the window is
    longer than grace_period, every split W = W0 W1 (older | newer, both at least
    min_window_length long) is tested, with n = |W|, sigma2 = variance of W and
        d = ln(2 ln(n) / delta),  1/m = 1/(n0 - L + 1) + 1/(n1 - L + 1),  L = min_window_length,
        cut if |mean(W0) - mean(W1)| > sqrt(2 sigma2 d / m) + 2 d / (3 m).
    Each cut drops the oldest bucket and the test restarts. As in river, the whole window is
    then discarded on the next update, so detections land on ticks that are multiples of
    `clock` counted from the last reset (indices 31, 63, ... with the defaults).
    """

    name = "adwin"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        _check(_is_real(delta) and 0 < delta < 1, "delta", "a number in (0, 1)", delta)
        _check(_is_int(clock, 1), "clock", "an integer >= 1", clock)
        _check(_is_int(max_buckets, 1), "max_buckets", "an integer >= 1", max_buckets)
        _check(_is_int(min_window_length, 1), "min_window_length", "an integer >= 1",
               min_window_length)
        _check(_is_int(grace_period, 0), "grace_period", "an integer >= 0", grace_period)
        super().__init__()
        self.delta = float(delta)
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._reset()

    def _reset(self) -> None:
        self._tick = 0
        self._width = 0
        self._total = 0.0
        self._m2 = 0.0  # sum of squared deviations from the window mean
        # _sums[i][j] / _m2s[i][j]: the j-th oldest bucket of 2^i values.
        self._sums: list[list[float]] = [[]]
        self._m2s: list[list[float]] = [[]]

    @property
    def width(self) -> int:
        return self._width

    @property
    def estimation(self) -> float:
        """Mean of the window (0.0 when empty)."""
        return self._total / self._width if self._width else 0.0

    @property
    def variance(self) -> float:
        """Population variance of the window. river's `variance` is the unnormalised sum of
        squared deviations, i.e. this times `width`."""
        return self._m2 / self._width if self._width else 0.0

    def _step(self, x: float) -> bool:
        self._insert(float(x))
        self._tick += 1
        if self._tick % self.clock or self._width <= self.grace_period:
            return False
        detected = False
        while self._has_cut():
            self._drop_oldest()
            detected = True
        return detected

    def _insert(self, x: float) -> None:
        n = self._width = self._width + 1
        if n > 1:
            dx = x - self._total / (n - 1)
            self._m2 += (n - 1) * dx * dx / n
        self._total += x
        newest = self._sums[0]
        newest.append(x)
        self._m2s[0].append(0.0)
        if len(newest) > self.max_buckets:
            self._merge_rows()

    def _merge_rows(self) -> None:
        """Merge the two oldest buckets of each overfull row into one of the next row."""
        row = 0
        while len(self._sums[row]) > self.max_buckets:
            size = 1 << row
            (s0, s1), (v0, v1) = self._sums[row][:2], self._m2s[row][:2]
            gap = s0 / size - s1 / size
            del self._sums[row][:2], self._m2s[row][:2]
            if row + 1 == len(self._sums):
                self._sums.append([])
                self._m2s.append([])
            self._sums[row + 1].append(s0 + s1)
            self._m2s[row + 1].append(v0 + v1 + size * 0.5 * gap * gap)
            row += 1

    def _has_cut(self) -> bool:
        width = self._width
        window_var = self._m2 / width
        # river computes sqrt(negative) -> NaN -> no cut; math.sqrt would raise instead.
        if width < 2 or window_var < 0:
            return False
        d = math.log(2.0 * math.log(width) / self.delta)
        low = self.min_window_length
        n0, n1, u0, u1 = 0, width, 0.0, self._total
        # Oldest first: largest buckets, and within a row index 0. The last split (W1 empty)
        # is never tested. u1 is a running difference, not total - u0, to round like river.
        for row in range(len(self._sums) - 1, -1, -1):
            size = 1 << row
            for s in self._sums[row]:
                n0 += size
                n1 -= size
                u0 += s
                u1 -= s
                if n0 < low or n1 < low:
                    continue
                m_inv = 1.0 / (n0 - low + 1) + 1.0 / (n1 - low + 1)
                eps = math.sqrt(2.0 * m_inv * window_var * d) + 2.0 / 3.0 * d * m_inv
                if abs(u0 / n0 - u1 / n1) > eps:
                    return True
        return False

    def _drop_oldest(self) -> None:
        row = len(self._sums) - 1
        size = 1 << row
        s, v = self._sums[row].pop(0), self._m2s[row].pop(0)
        self._width -= size
        self._total -= s
        gap = s / size - self._total / self._width
        self._m2 -= v + size * self._width * gap * gap / (size + self._width)
        # Trailing empty rows would be read as zero-filled buckets (only with max_buckets=1).
        while len(self._sums) > 1 and not self._sums[-1]:
            self._sums.pop()
            self._m2s.pop()

    def state(self) -> dict[str, Any]:
        return super().state() | {
            "width": self._width,
            "estimation": self.estimation,
            "variance": self.variance,
        }


class PageHinkley(_Base):
    """Page-Hinkley test (Page, Biometrika 1954; Hinkley, Biometrika 1971), with forgetting.

    With x_bar the running mean including x, S+ <- alpha S+ + (x - x_bar - delta) and
    S- <- alpha S- + (x - x_bar + delta). Once min_instances samples have arrived: drift up if
    S+ - min(S+) > threshold, drift down if max(S-) - S- > threshold; `mode` picks "up",
    "down" or "both". delta and threshold are in the units of x: feed standardised values.
    alpha < 1 lets the sums wander (stationary std ~ sigma / sqrt(1 - alpha^2)), which gives
    false alarms; alpha=1, delta=0.25, threshold=25 suits z-scored latencies (§3.4).
    """

    name = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        _check(_is_int(min_instances, 1), "min_instances", "an integer >= 1", min_instances)
        _check(_is_real(delta) and delta >= 0, "delta", "a finite number >= 0", delta)
        _check(_is_real(threshold) and threshold > 0, "threshold", "a finite number > 0",
               threshold)
        _check(_is_real(alpha) and 0 < alpha <= 1, "alpha", "a number in (0, 1]", alpha)
        _check(mode in ("up", "down", "both"), "mode", "'up', 'down' or 'both'", mode)
        super().__init__()
        self.min_instances = min_instances
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        self._watch_up = mode != "down"
        self._watch_down = mode != "up"
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._sum_up = self._sum_down = 0.0
        # river starts the maximum at -1, not -inf; equivalent, since the first S- is delta >= 0.
        self._min_up, self._max_down = math.inf, -math.inf

    def _step(self, x: float) -> bool:
        n = self._n = self._n + 1
        mean = self._mean = self._mean + (1.0 / n) * (x - self._mean)
        dev = x - mean
        up = self._sum_up = self.alpha * self._sum_up + dev - self.delta
        down = self._sum_down = self.alpha * self._sum_down + dev + self.delta
        if up < self._min_up:
            self._min_up = up
        if down > self._max_down:
            self._max_down = down
        if n < self.min_instances:
            return False
        if self._watch_up and up - self._min_up > self.threshold:
            return True
        return self._watch_down and self._max_down - down > self.threshold

    def state(self) -> dict[str, Any]:
        return super().state() | {
            "samples": self._n,
            "mean": self._mean,
            "up_statistic": self._sum_up - self._min_up if self._n else 0.0,
            "down_statistic": self._max_down - self._sum_down if self._n else 0.0,
        }
