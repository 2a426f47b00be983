"""Per-request statistics: O(1) updates on the request path, read by the controller on a tick."""

from canarygate.stats.arm import ArmStats, ShadowStats, StepWindow
from canarygate.stats.histogram import LogHistogram

__all__ = ["ArmStats", "LogHistogram", "ShadowStats", "StepWindow"]
