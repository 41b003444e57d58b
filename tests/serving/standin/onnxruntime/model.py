"""TEST FIXTURE: a stand-in for Triton's ONNX Runtime backend, written in Python.

The Triton server that installs here from PyPI (nvidia-pytriton's bundled tritonserver 2.51)
ships the python backend only; NVIDIA's onnxruntime backend library comes with their containers.
Triton runs a backend folder that holds a ``model.py`` and no ``libtriton_onnxruntime.so``
through the python backend, so this file, placed as ``<backends>/onnxruntime/model.py``, serves
every ``platform: "onnxruntime_onnx"`` model of a repository unchanged: it loads
``<model>/<version>/model.onnx`` into an onnxruntime InferenceSession (CPU) and runs each batch
Triton's dynamic batcher forms as one session call. Whatever the tests measure through it is
Triton's own request path plus this Python stand-in, not NVIDIA's C++ backend.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("STANDIN_ORT_THREADS", "1"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        responses, start = [], 0
        for n in sizes:
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out[start:start + n])]))
            start += n
        return responses
