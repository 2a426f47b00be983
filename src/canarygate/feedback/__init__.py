"""Feedback: ground-truth labels joined to the predictions they answer."""

from canarygate.feedback.index import FeedbackBook, Prediction, packed

__all__ = ["FeedbackBook", "Prediction", "packed"]
