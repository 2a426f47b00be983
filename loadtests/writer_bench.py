"""How many records a second the dataset writer sustains with no drops, on this machine.

In-process: the real ``Recorder`` (the request path's queue) and the real ``Writer`` thread,
writing JSON Lines segments to a temporary folder. A producer thread stands in for the request
path: it builds one ``Record`` a request (30 FP32 inputs from the breast-cancer reference rows,
a label and two probabilities, latencies; what the gateway records) and puts it on the queue.
It competes for the GIL with the writer as the event loop does in the gateway.

Two measurements:

- **open loop**: the producer offers records at a fixed rate for a while, rate after rate;
  a rate is sustained when nothing was dropped and the writer's lag (the age of the oldest
  queued record, sampled every 50 ms) does not climb: its mean over the stage's last third is
  within 50 ms of its mean over the first third. A writer that falls behind lets the queue and
  the lag grow long before the 65,536-record queue drops anything;
- **drain**: the writer alone on a queue filled before it starts, timed until it has written
  everything: its ceiling, with nothing else wanting the GIL (in the gateway the event loop
  always does, so the open-loop figure is the one to quote).

``--parquet`` also writes each closed segment as Parquet (segments rotate at
``--segment-mb``), ``--fsync`` fsyncs each write.

    .venv/bin/python -m loadtests.writer_bench            # ~1 min
    .venv/bin/python -m loadtests.writer_bench --quick    # ~10 s
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canarygate.config import DatasetConfig
from canarygate.recorder import Record, Recorder
from canarygate.recorder.writer import Writer
from loadtests.payloads import MODELS

RATES = [1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 60_000, 80_000]
QUICK_RATES = [2_000, 5_000, 10_000, 20_000, 40_000]
CLIMB = 0.05  # seconds the mean lag may rise from a stage's first third to its last


class Traffic:
    """Records like the gateway's: real rows, fresh Record objects, shared arrays."""

    def __init__(self) -> None:
        with np.load(MODELS / "breast-cancer" / "1" / "reference.npz") as data:
            x = np.asarray(data["inputs"], dtype=np.float32)
            labels = np.asarray(data["output_label"])
            proba = np.asarray(data["output_probabilities"], dtype=np.float32)
        self.inputs = [{"input": x[i:i + 1]} for i in range(len(x))]
        self.outputs = [{"label": labels[i:i + 1], "probabilities": proba[i:i + 1]}
                        for i in range(len(x))]
        self.n = 0

    def record(self) -> Record:
        i = self.n % len(self.inputs)
        self.n += 1
        return Record(
            time=time.time(), request_id=f"{self.n:032x}", model="breast-cancer", version="1",
            variant="baseline", routing="weight", step=2, weight=10.0, protocol="v2",
            status=200, error=None, inputs=self.inputs[i], outputs=self.outputs[i],
            queue_ms=0.05, inference_ms=0.21, total_ms=0.93, batch_size=1)


@dataclass
class Stage:
    mode: str
    target: float | None  # offered records/s (open loop); None for the drain
    seconds: float
    offered: int
    dropped: int
    written: int  # during the stage
    bytes_per_record: float  # of the JSON Lines written
    max_lag: float
    end_lag: float
    end_queue: int
    stop_seconds: float  # writing what was still queued, closing segments (Parquet too)
    sustained: bool


def run_stage(traffic: Traffic, config: DatasetConfig, seconds: float, rate: float) -> Stage:
    """Offer ``rate`` records a second for ``seconds``, open loop, to a fresh writer."""
    recorder = Recorder(config)
    writer = Writer(recorder, config)
    writer.start()
    lags: list[float] = []
    done = threading.Event()

    def sample_lag() -> None:
        while not done.wait(0.05):
            lags.append(recorder.lag_seconds(time.time()))

    sampler = threading.Thread(target=sample_lag, daemon=True)
    sampler.start()
    start = time.perf_counter()
    offered = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed)
        while offered < due:
            recorder.put(traffic.record())
            offered += 1
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    written, end_queue = recorder.written, len(recorder.queue)
    end_lag = recorder.lag_seconds(time.time())
    done.set()
    sampler.join()
    t0 = time.perf_counter()
    writer.stop()
    stop_seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in config.dir.glob("**/*.jsonl"))
    # Keeping up: the lag saws between 0 and a flush interval; falling behind, it climbs.
    third = max(1, len(lags) // 3)
    climb = float(np.mean(lags[-third:]) - np.mean(lags[:third])) if lags else 0.0
    return Stage("open", rate, elapsed, offered, recorder.dropped, written,
                 size / max(recorder.written, 1), max(lags, default=0.0), end_lag, end_queue,
                 stop_seconds, recorder.dropped == 0 and climb <= CLIMB)


def run_drain(traffic: Traffic, config: DatasetConfig, records: int) -> Stage:
    """The writer alone: ``records`` queued before it starts, timed until all are written.
    No producer competes for the GIL, so this is the writer's ceiling."""
    # A short interval: the thread's first drain starts at once (one drain empties the queue).
    config = config.model_copy(update={"queue_size": records, "flush_interval_seconds": 0.001})
    recorder = Recorder(config)
    writer = Writer(recorder, config)
    for _ in range(records):
        recorder.put(traffic.record())
    start = time.perf_counter()
    writer.start()
    while recorder.written + recorder.failed < records:
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    t0 = time.perf_counter()
    writer.stop()
    stop_seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in config.dir.glob("**/*.jsonl"))
    return Stage("drain", None, elapsed, records, recorder.dropped, recorder.written,
                 size / max(recorder.written, 1), 0.0, 0.0, 0, stop_seconds, True)


def table(stages: list[Stage]) -> str:
    head = (f"{'mode':<6} {'target/s':>9} {'offered/s':>10} {'written/s':>10} {'MB/s':>6} "
            f"{'dropped':>8} {'max lag s':>9} {'end lag s':>9} {'end queue':>9} "
            f"{'stop s':>7}  sustained")
    lines = [head, "-" * len(head)]
    for s in stages:
        target = "-" if s.target is None else f"{s.target:,.0f}"
        mb = s.written * s.bytes_per_record / s.seconds / 1e6
        lines.append(
            f"{s.mode:<6} {target:>9} {s.offered / s.seconds:>10,.0f} "
            f"{s.written / s.seconds:>10,.0f} {mb:>6.1f} {s.dropped:>8} {s.max_lag:>9.2f} "
            f"{s.end_lag:>9.2f} {s.end_queue:>9,} {s.stop_seconds:>7.2f}  "
            f"{'-' if s.target is None else 'yes' if s.sustained else 'NO'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1.5 s stages, fewer rates")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per stage")
    parser.add_argument("--rates", default=None, help="comma-separated records/s to offer")
    parser.add_argument("--flush", type=float, default=0.2, help="flush interval, seconds")
    parser.add_argument("--parquet", action="store_true", help="closed segments as Parquet too")
    parser.add_argument("--segment-mb", type=float, default=64.0, help="rotate at this size")
    parser.add_argument("--fsync", action="store_true", help="fsync after each write")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()
    seconds = args.seconds or (1.5 if args.quick else 4.0)
    rates = ([float(r) for r in args.rates.split(",")] if args.rates else
             QUICK_RATES if args.quick else RATES)
    traffic = Traffic()
    stages: list[Stage] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        def config(name: str) -> DatasetConfig:
            return DatasetConfig(dir=Path(tmp) / name, flush_interval_seconds=args.flush,
                                 max_segment_bytes=int(args.segment_mb * 2**20),
                                 parquet=args.parquet, fsync=args.fsync)

        failures = 0
        for rate in rates:
            stage = run_stage(traffic, config(f"open-{rate:.0f}"), seconds, rate)
            stages.append(stage)
            failures += not stage.sustained
            if failures == 2:  # one rate past the first failure shows the trend; enough
                break
        stages.append(run_drain(traffic, config("drain"), 50_000 if args.quick else 150_000))
    drain = stages[-1]
    print(f"dataset writer, {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, flush {args.flush} s, "
          f"parquet {args.parquet}, fsync {args.fsync}; "
          f"{drain.bytes_per_record:.0f} bytes a record (JSON Lines)")
    print(table(stages))
    sustained = [s.target for s in stages if s.target is not None and s.sustained]
    print(f"\nsustained with no drops: {max(sustained, default=0):,.0f} records/s offered "
          f"(the highest passing rate); the writer alone drains "
          f"{drain.written / drain.seconds:,.0f} records/s, "
          f"{drain.written * drain.bytes_per_record / drain.seconds / 1e6:.1f} MB/s")


if __name__ == "__main__":
    main()
