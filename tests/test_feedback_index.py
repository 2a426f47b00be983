"""The feedback index on its own: a ring of slots that evicts the oldest, and a request path
that allocates nothing for the garbage collector."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from canarygate.errors import NotFound
from canarygate.feedback.index import FeedbackBook, packed


def remember(book: FeedbackBook, rid: str, t: float = 0.0, version: str = "1",
             values: tuple[float, ...] = (1.0,)) -> None:
    book.remember(rid, t, "m", version, "baseline", True, packed(np.asarray(values)))


def test_the_ring_keeps_the_last_max_entries_and_evicts_the_oldest() -> None:
    book = FeedbackBook(max_entries=4)
    for i in range(10):
        remember(book, f"r{i}", t=float(i))
    assert len(book) == 4
    assert [book.get(f"r{i}") is not None for i in range(10)] == [False] * 6 + [True] * 4
    kept = book.get("r7")
    assert kept is not None and kept.time == 7.0 and kept.predicted == (1.0,)


def test_reserve_leaves_only_placeholders_that_age_out() -> None:
    book = FeedbackBook(max_entries=3)
    book.reserve()
    assert len(book) == 3 and all(rid.startswith("\x00") for rid in book.slots)
    for i in range(3):
        remember(book, f"r{i}")
    assert sorted(book.slots) == ["r0", "r1", "r2"]


def test_an_id_used_again_takes_a_new_slot_and_starts_unlabelled() -> None:
    book = FeedbackBook(max_entries=3)
    remember(book, "a", values=(0.0,))
    book.apply("m", [{"request_id": "a", "label": 0}], now=0.0)
    remember(book, "a", version="2", values=(1.0,))  # the client sent the same id again
    prediction = book.get("a")
    assert prediction is not None and prediction.version == "2" and "a" not in book.labels
    # The old slot's turn to go must not take the id's newer prediction with it.
    remember(book, "b")
    remember(book, "c")
    assert book.get("a") is not None and len(book) == 3
    remember(book, "d")  # now the newer "a" is the oldest
    assert book.get("a") is None
    with pytest.raises(NotFound, match="evicted from the last 3"):
        book.apply("m", [{"request_id": "a", "label": 1}], now=0.0)


def test_an_evicted_label_leaves_with_its_prediction() -> None:
    book = FeedbackBook(max_entries=2)
    remember(book, "a")
    book.apply("m", [{"request_id": "a", "label": 1}], now=0.0)
    remember(book, "b")
    remember(book, "c")
    assert "a" not in book.labels


def test_values_round_trip_through_the_packing() -> None:
    book = FeedbackBook(max_entries=3)
    book.remember("i", 0.0, "m", "1", "baseline", True, packed(np.array([2, 0, 1])))
    book.remember("s", 0.0, "m", "1", "baseline", True, packed(np.array(["x", "y"])))
    regressor = packed(np.array([1.5, -0.25], dtype=np.float32))
    assert isinstance(regressor, bytes)  # numbers are kept as bytes, not a tuple
    book.remember("f", 0.0, "m", "1", "baseline", False, regressor)
    assert (p := book.get("i")) is not None and p.predicted == (2.0, 0.0, 1.0)
    assert (p := book.get("s")) is not None and p.predicted == ("x", "y")
    assert (p := book.get("f")) is not None and p.predicted == (1.5, -0.25)


def test_remembering_allocates_nothing_the_collector_tracks() -> None:
    book = FeedbackBook(max_entries=1000)
    book.reserve()
    ids = [f"{i:032x}" for i in range(5000)]
    values = [packed(np.asarray([float(i % 2)])) for i in range(5000)]
    gc.collect()
    gc.disable()
    try:
        tracked = len(gc.get_objects(0))
        for rid, v in zip(ids, values, strict=True):
            book.remember(rid, 1.0, "m", "1", "baseline", True, v)
        grown = len(gc.get_objects(0)) - tracked
    finally:
        gc.enable()
    assert grown < 10, f"{grown} new tracked objects for 5000 predictions"
