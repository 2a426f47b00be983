"""Model runtime: onnxruntime sessions per model version, input checks, runs off the event loop."""

from canarygate.runtime.model import ModelVersion
from canarygate.runtime.registry import ModelRegistry, ServedModel
from canarygate.runtime.tensors import Tensor, TensorSpec

__all__ = ["ModelRegistry", "ModelVersion", "ServedModel", "Tensor", "TensorSpec"]
