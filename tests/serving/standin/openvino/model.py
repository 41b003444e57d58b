"""TEST FIXTURE: a stand-in for Triton's OpenVINO backend, written in Python around OpenVINO itself.

NVIDIA's OpenVINO backend library (``libtriton_openvino.so``) comes with their containers, not with the
PyPI server that installs here, which runs a backend folder holding a ``model.py`` through the python
backend. Placed as ``<backends>/openvino/model.py``, this file serves every ``backend: "openvino"``
model of a repository unchanged, reading what the real backend reads: the model file named by
``default_model_filename`` (``model.onnx``) in the version folder, and the ``PERFORMANCE_HINT``,
``NUM_STREAMS`` and ``INFERENCE_NUM_THREADS`` parameters, compiled by OpenVINO for the CPU; each batch
Triton's dynamic batcher forms is one infer request. The numerics are OpenVINO's; the request path
around them is Triton's python backend, not the C++ backend.
"""

import json
import os

import numpy as np
import openvino as ov
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.xml"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        params = {k: v["string_value"] for k, v in (config.get("parameters") or {}).items()}
        props = {"PERFORMANCE_HINT": params.get("PERFORMANCE_HINT", "LATENCY")}
        if "NUM_STREAMS" in params:
            props["NUM_STREAMS"] = params["NUM_STREAMS"]
        props["INFERENCE_NUM_THREADS"] = int(params.get("INFERENCE_NUM_THREADS", os.environ.get("STANDIN_OV_THREADS", "1")))
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU", props)
        self.request = self.compiled.create_infer_request()
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        out = np.asarray(self.request.infer({self.input_name: batch})[self.output_name])
        responses, start = [], 0
        for n in sizes:
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out[start:start + n])]))
            start += n
        return responses
