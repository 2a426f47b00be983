"""Background passes hand the GIL back to the event loop's thread within a slice."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from canarygate.background import Pacer

SWITCH = 0.02  # a long switch interval, so that a pass that never pauses shows plainly


@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def waits_beside(pause: Callable[[], None], samples: int = 40) -> list[float]:
    """How long this thread waits for the interpreter after each short blocking call, while
    another thread runs a pure-Python pass that calls ``pause`` once per item."""
    stop = threading.Event()
    started = threading.Event()

    def busy_pass() -> None:
        started.set()
        total = 0
        while not stop.is_set():
            for i in range(200):  # an item: a little Python work
                total += i * i
            pause()

    worker = threading.Thread(target=busy_pass, daemon=True)
    worker.start()
    started.wait()
    waits = []
    try:
        for _ in range(samples):
            before = time.perf_counter()
            time.sleep(0.0001)  # a blocking call releases the GIL, as the loop's poll does
            waits.append(time.perf_counter() - before)
    finally:
        stop.set()
        worker.join()
    return waits


# Alone: beside other tests on both cores the busy thread is often not running at all, and the
# GIL it would hold is free (CI once saw the unpaced median at 0.17 ms).
@pytest.mark.serial
def test_a_paced_pass_gives_the_gil_back_within_its_slice() -> None:
    with switch_interval(SWITCH):
        paced = waits_beside(Pacer(0.0002))
        unpaced = waits_beside(lambda: None)
    # Unpaced, the sleeper waits out the switch interval for the GIL nearly every time; paced,
    # within a slice and a pause (a loaded machine adds its own delays, hence the margin).
    assert statistics.median(unpaced) > SWITCH / 2
    assert statistics.median(paced) < SWITCH / 10

