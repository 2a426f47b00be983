"""Performance estimated without labels (off the request path): see ``estimate/cbpe.py``."""

from canarygate.estimate.cbpe import AccuracyEstimator, Calibrator, Estimate

__all__ = ["AccuracyEstimator", "Calibrator", "Estimate"]
