"""Background work that shares the interpreter with the event loop.

A thread busy in Python holds the GIL for up to the switch interval (5 ms) at a time, and the
event loop needs the GIL back after every socket operation, so behind a busy thread the loop
turns at a few hundred times a second and requests queue: a 300 ms binning pass stalled
answers for most of a second under load. Long background passes therefore pause briefly and
often, which hands the GIL straight to the loop.
"""

from __future__ import annotations

import time

PAUSE_SECONDS = 0.0002


def yield_gil() -> None:
    """Let the event loop run: a sleep releases the GIL, and a waiting thread takes it."""
    time.sleep(PAUSE_SECONDS)
