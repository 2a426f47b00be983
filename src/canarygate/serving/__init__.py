"""The serving plane: route, run, fall back, shadow and observe, with no transport in it.

Front ends (the HTTP codecs today; gRPC or a replay command could follow) decode a request into
tensors, call ``ServingPlane.predict`` and encode what it returns; the ``Observer`` then hands
the answer to every consumer of telemetry in one call.
"""

from canarygate.serving.answer import Answer
from canarygate.serving.observe import Observer
from canarygate.serving.plane import ServingPlane

__all__ = ["Answer", "Observer", "ServingPlane"]
