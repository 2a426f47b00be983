"""MLServer custom runtime serving an ONNX model with onnxruntime (runs inside MLServer's venv).

The peer comparison serves the very same model.onnx as canarygate, so the gap measured is the
server's, not sklearn's: MLServer's stock sklearn runtime is 40-600x slower per call (perf.md).
``mlserver_setup.py`` copies this file next to model-settings.json as ``ort_runtime.py``.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as canarygate and the minimal gateway
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {item.name: NumpyCodec.decode_input(item).astype(np.float32)
                 for item in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, value)
                     for name, value in zip(self._outputs, results, strict=True)],
        )
