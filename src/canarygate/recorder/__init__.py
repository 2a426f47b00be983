"""The inference dataset: the request path queues records, a writer thread appends segments."""

from canarygate.recorder.queue import FeedbackRecord, Record, Recorder

__all__ = ["FeedbackRecord", "Record", "Recorder"]
