"""Per-request statistics: O(1) updates on the request path, read by the controller on a tick."""

from canarygate.stats.histogram import LogHistogram
from canarygate.stats.step import ShadowStats, StepStats, VariantStepStats

__all__ = ["LogHistogram", "ShadowStats", "StepStats", "VariantStepStats"]
