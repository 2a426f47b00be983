"""canarygate: a model-serving gateway with built-in canary routing."""

__version__ = "0.1.0"
