"""Replaying captured traffic through a candidate version offline (``canarygate replay``).

Off the request path entirely: it reads the inference dataset and runs onnxruntime itself.
"""

from canarygate.replay.report import Options, model_digest, replay
from canarygate.replay.source import ReplayError
from canarygate.replay.verdict import REPORT_FORMAT, load_report, replay_allows

__all__ = ["REPORT_FORMAT", "Options", "ReplayError", "load_report", "model_digest", "replay",
           "replay_allows"]
