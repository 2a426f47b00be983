"""Drift: reference profiles against live traffic, computed off the request path."""

from canarygate.drift.monitor import DriftMonitor

__all__ = ["DriftMonitor"]
