"""Reading the inference dataset back: every segment, skipping (and counting) torn lines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class ReadStats:
    segments: int = 0
    records: int = 0
    torn: int = 0  # lines that are not whole JSON records (a crash mid-write leaves one)


def segments(root: Path) -> list[Path]:
    """JSON Lines segments under ``root`` (a dataset folder or one segment), oldest first."""
    if root.is_file():
        return [root]
    return sorted(root.glob("**/*.jsonl"), key=lambda p: p.name)


def records(path: Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                if stats is not None:
                    stats.torn += 1
                continue
            if stats is not None:
                stats.records += 1
            yield record


def read_all(root: Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    for path in segments(root):
        if stats is not None:
            stats.segments += 1
        yield from records(path, stats)


@dataclass
class Summary:
    stats: ReadStats
    by_key: Counter[tuple[str, str, str, int | str]] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "segments": self.stats.segments, "records": self.stats.records,
            "torn_lines": self.stats.torn, "first": self.first, "last": self.last,
            "groups": [{"model": m, "version": v, "variant": var, "status": s, "records": n}
                       for (m, v, var, s), n in sorted(self.by_key.items(),
                                                        key=lambda kv: str(kv[0]))],
        }

    def text(self) -> str:
        from datetime import UTC, datetime

        def when(t: float | None) -> str:
            return "-" if t is None else datetime.fromtimestamp(t, UTC).isoformat(
                timespec="seconds")

        lines = [f"{self.stats.records} records in {self.stats.segments} segments "
                 f"({self.stats.torn} torn lines skipped), {when(self.first)} to "
                 f"{when(self.last)}", "",
                 f"{'MODEL':<20} {'VERSION':<8} {'VARIANT':<10} {'STATUS':<6} RECORDS"]
        for (m, v, var, s), n in sorted(self.by_key.items(), key=lambda kv: str(kv[0])):
            lines.append(f"{m:<20} {v:<8} {var:<10} {s!s:<6} {n}")
        return "\n".join(lines)


def summarize(root: Path) -> Summary:
    summary = Summary(ReadStats())
    for r in read_all(root, summary.stats):
        status = "feedback" if r.get("kind") == "feedback" else int(r.get("status", 0))
        summary.by_key[(r.get("model", ""), r.get("version", ""), r.get("variant", ""),
                        status)] += 1
        t = r.get("time")
        if isinstance(t, int | float):
            summary.first = t if summary.first is None else min(summary.first, t)
            summary.last = t if summary.last is None else max(summary.last, t)
    return summary


def schema() -> Any:
    """The dataset's Arrow schema: the same for every model, so segments concatenate."""
    import pyarrow as pa

    tensor = pa.struct([("name", pa.string()), ("datatype", pa.string()),
                        ("shape", pa.list_(pa.int64())), ("data", pa.list_(pa.float64())),
                        ("text", pa.list_(pa.string())), ("sha256", pa.string())])
    return pa.schema([
        ("kind", pa.string()),
        ("time", pa.float64()), ("request_id", pa.string()), ("model", pa.string()),
        ("version", pa.string()), ("variant", pa.string()), ("routing", pa.string()),
        ("step", pa.int64()), ("weight", pa.float64()), ("protocol", pa.string()),
        ("status", pa.int64()), ("error", pa.string()),
        ("inputs", pa.list_(tensor)), ("outputs", pa.list_(tensor)),
        ("latency_ms", pa.struct([("queue", pa.float64()), ("inference", pa.float64()),
                                  ("total", pa.float64()), ("batch_size", pa.int64())])),
        ("shadow", pa.struct([("version", pa.string()), ("error", pa.string()),
                              ("outputs", pa.list_(tensor))])),
        ("feedback", pa.struct([("label", pa.list_(pa.float64())),
                                ("predicted", pa.list_(pa.float64()))])),
    ])


def to_table(rows: list[dict[str, Any]]) -> Any:
    """Records as an Arrow table; BYTES tensors keep their strings in ``text``."""
    import pyarrow as pa

    for row in rows:
        for key in ("inputs", "outputs"):
            _split_text(row.get(key))
        if row.get("shadow"):
            _split_text(row["shadow"].get("outputs"))
    return pa.Table.from_pylist(rows, schema=schema())


def _split_text(tensors: list[dict[str, Any]] | None) -> None:
    for t in tensors or []:
        if t.get("datatype") == "BYTES":
            t["text"] = t.pop("data", None)


def export(root: Path, target: Path) -> int:
    """Every readable record under ``root`` as one Parquet file; returns the record count."""
    import pyarrow.parquet as pq

    rows = list(read_all(root))
    if not rows:
        raise ValueError(f"no records under {root}")
    table = to_table(rows)
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    return int(table.num_rows)


__all__ = ["ReadStats", "Summary", "export", "read_all", "records", "segments",
           "summarize"]
