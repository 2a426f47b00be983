"""Latency, throughput and errors per model version and variant over the last minute.

Each (model, version, variant) keeps a ring of short sub-windows (12 of 5 s by default). The
request path adds to the current one: a few counters and three log-bucket inserts (end-to-end
time, queue wait, inference; DDSketch mapping, 1 % relative accuracy). When the clock passes
the current sub-window's end, the next slot is replaced by an empty one and the one it held is
set aside, all O(1); readers fold what was set aside into cumulative totals (what /metrics
exports as histograms) and merge the ring into last-minute figures, off the request path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from canarygate.stats.histogram import LogHistogram

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("p99_9", 0.999))
_QS = tuple(q for _, q in QUANTILES)
KINDS = ("total", "queue", "inference")
MAX_SET_ASIDE = 64  # sub-windows waiting to be folded before the request path folds them


class Slot:
    """One sub-window's counts."""

    __slots__ = ("batch_rows", "client_errors", "inference", "queue", "requests", "rows",
                 "server_errors", "shipped", "start", "total")

    def __init__(self, start: float) -> None:
        self.start = start
        self.shipped: str | None = None  # as JSON for other workers, once it is closed
        self.requests = 0
        self.client_errors = 0  # 4xx: the caller's mistake
        self.server_errors = 0  # 5xx and model failures
        self.rows = 0
        self.batch_rows = 0  # summed over answered requests: / answered = mean batch
        self.total = LogHistogram()
        self.queue = LogHistogram()
        self.inference = LogHistogram()

    def merge(self, other: Slot, kinds: tuple[str, ...] = KINDS) -> None:
        self.requests += other.requests
        self.client_errors += other.client_errors
        self.server_errors += other.server_errors
        self.rows += other.rows
        self.batch_rows += other.batch_rows
        for kind in kinds:
            getattr(self, kind).merge(getattr(other, kind))


class VariantStats:
    def __init__(self, now: float, width: float, slots: int) -> None:
        self.width = width
        self.created = now
        self.ring = [Slot(now - width * (slots - 1 - i)) for i in range(slots)]
        self.index = slots - 1
        self.current = self.ring[-1]
        self.end = now + width
        self.set_aside: list[Slot] = []
        self.cumulative = Slot(now)

    def record(self, now: float, seconds: float, status: int, rows: int,
               queue: float | None, inference: float | None, batch_rows: int) -> None:
        """The request path's part: O(1)."""
        if now >= self.end:
            self._advance(now)
        slot = self.current
        slot.requests += 1
        if status != 200:
            if status >= 500:
                slot.server_errors += 1
            else:
                slot.client_errors += 1
            return
        slot.rows += rows
        slot.batch_rows += batch_rows
        slot.total.add(seconds)
        if queue is not None and inference is not None:
            slot.queue.add(queue)
            slot.inference.add(inference)

    def _advance(self, now: float) -> None:
        ring = self.ring
        skipped = int((now - self.end) // self.width)  # whole sub-windows with no request
        start = self.end + skipped * self.width  # of the sub-window that holds ``now``
        steps = min(skipped + 1, len(ring))
        for k in range(steps):
            self.index = (self.index + 1) % len(ring)
            self.set_aside.append(ring[self.index])
            ring[self.index] = Slot(start - (steps - 1 - k) * self.width)
        self.current = ring[self.index]
        self.end = start + self.width
        if len(self.set_aside) > MAX_SET_ASIDE:
            self.fold()

    def fold(self) -> None:
        """Move the sub-windows set aside into the cumulative totals."""
        aside, self.set_aside = self.set_aside, []
        for slot in aside:
            self.cumulative.merge(slot)

    def totals(self) -> Slot:
        """Everything since start: the cumulative totals plus the ring (for /metrics)."""
        self.fold()
        out = Slot(self.cumulative.start)
        out.merge(self.cumulative)
        for slot in self.ring:
            out.merge(slot)
        return out

    def last(self, now: float, seconds: float,
             kinds: tuple[str, ...] = KINDS) -> tuple[Slot, float]:
        """The sub-windows that started in the last ``seconds``, merged (the histograms of
        ``kinds`` only), and the time they cover (less when the variant is younger)."""
        if now >= self.end:
            self._advance(now)
        out = Slot(now)
        for slot in self.ring:
            if slot.start > now - seconds - 1e-9:
                out.merge(slot, kinds)
                out.start = min(out.start, slot.start)
        return out, max(now - max(out.start, self.created), 1e-9)


@dataclass
class LiveStats:
    """Every variant's figures, created on first use."""

    width: float = 5.0
    slots: int = 12
    variants: dict[tuple[str, str, str], VariantStats] = field(default_factory=dict)

    def get(self, model: str, version: str, variant: str, now: float) -> VariantStats:
        key = (model, version, variant)
        found = self.variants.get(key)
        if found is None:
            found = self.variants[key] = VariantStats(now, self.width, self.slots)
        return found

    def summary(self, model: str, now: float, seconds: float | None = None,
                others: list[dict[str, Any]] | None = None, wall: float = 0.0,
                kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
        """The last minute of every version and variant of ``model``, as JSON (the latency
        quantiles of ``kinds``: the controller's tick asks for ``total`` only, a third of the
        merging); with ``others`` (other workers' ``snapshot``s, ``wall`` the time now on the
        wall clock), everyone's figures added up."""
        span = seconds if seconds is not None else self.width * self.slots
        found: dict[tuple[str, str], tuple[Slot, float]] = {}
        for (m, version, variant), stats in list(self.variants.items()):
            if m == model:
                found[(version, variant)] = stats.last(now, span, kinds)
        for snapshot in others or []:
            for version, variant, created, slots in snapshot["variants"]:
                total = Slot(wall)
                for raw in slots:
                    if raw[0] > wall - span - 1e-9:
                        total.merge(slot_from(raw), kinds)
                covered = max(wall - max(created, wall - span), 1e-9)
                if (version, variant) in found:
                    mine, seen = found[(version, variant)]
                    mine.merge(total, kinds)
                    covered = max(covered, seen)
                    total = mine
                found[(version, variant)] = (total, covered)
        out = [{"version": version, "variant": variant, **describe(slot, covered, kinds)}
               for (version, variant), (slot, covered) in found.items()]
        return {"model": model, "window_seconds": span, "variants": out}

    def snapshot(self, model: str, now: float, wall: float) -> str:
        """The last minute of each variant of ``model`` as JSON, its times on the wall clock
        (the only clock two processes share), for the other workers of a shared gateway.
        It runs on the event loop, which owns the figures; a closed sub-window never changes,
        so each is written once and only the open one every time."""
        out = []
        for (m, version, variant), stats in list(self.variants.items()):
            if m != model:
                continue
            if now >= stats.end:
                stats._advance(now)
            slots = []
            for slot in stats.ring:
                if not slot.requests:
                    continue
                if slot is stats.current:
                    slots.append(slot_text(slot, slot.start - now + wall))
                    continue
                if slot.shipped is None:
                    slot.shipped = slot_text(slot, slot.start - now + wall)
                slots.append(slot.shipped)
            head = json.dumps([version, variant, stats.created - now + wall])[:-1]
            out.append(f"{head}, [{', '.join(slots)}]]")
        return f'{{"at": {wall!r}, "variants": [{", ".join(out)}]}}'


def slot_text(slot: Slot, start: float) -> str:
    return json.dumps([start, slot.requests, slot.client_errors, slot.server_errors,
                       slot.rows, slot.batch_rows,
                       *(getattr(slot, kind).to_json() for kind in KINDS)])


def slot_from(raw: list[Any]) -> Slot:
    slot = Slot(float(raw[0]))
    (slot.requests, slot.client_errors, slot.server_errors, slot.rows,
     slot.batch_rows) = (int(x) for x in raw[1:6])
    for kind, hist in zip(KINDS, raw[6:9], strict=True):
        setattr(slot, kind, LogHistogram.from_json(hist))
    return slot


def describe(slot: Slot, seconds: float, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    answered = slot.requests - slot.client_errors - slot.server_errors
    figures: dict[str, Any] = {
        "requests": slot.requests,
        "qps": slot.requests / seconds,
        "rows_per_second": slot.rows / seconds,
        "error_rate": slot.server_errors / slot.requests if slot.requests else None,
        "client_error_rate": slot.client_errors / slot.requests if slot.requests else None,
        "mean_batch_rows": slot.batch_rows / answered if answered else None,
        "covered_seconds": seconds,
    }
    for kind in kinds:
        hist: LogHistogram = getattr(slot, kind)
        values = hist.quantiles(_QS)
        figures[f"{kind}_ms"] = {name: _ms(v) for (name, _), v in zip(QUANTILES, values,
                                                                      strict=True)}
    return figures


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 4)
