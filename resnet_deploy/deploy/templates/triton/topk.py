"""Triton python-backend model: logits -> top-k class names, indices and softmax probabilities.

Written by `resnet-deploy package --target triton`. The top-k is the toolkit's own
(``resnet_deploy_serving/classify.py``, copied verbatim: softmax in float64, ties to the lower
index), per image, with the class names of ``labels.txt`` beside this model: the same ranking
`resnet-deploy predict` prints.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from resnet_deploy_serving.classify import top_k
from resnet_deploy_serving.errors import UserError


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.top = int(config["parameters"]["resnet_deploy.top"]["string_value"])
        self.input_name = config["input"][0]["name"]
        folder = args["model_repository"]  # this model's own folder
        with open(os.path.join(folder, "labels.txt"), encoding="utf-8") as f:
            self.labels = [line.rstrip("\n") for line in f]

    def _one(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        rows = top_k(logits.reshape(-1, logits.shape[-1]).astype(np.float32), self.labels, self.top)
        lead = logits.shape[:-1]
        labels = np.array([[r["label"].encode("utf-8") for r in row] for row in rows], dtype=np.object_)
        indices = np.array([[r["index"] for r in row] for row in rows], dtype=np.int64)
        probs = np.array([[r["probability"] for r in row] for row in rows], dtype=np.float32)
        k = indices.shape[-1]
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("labels", labels.reshape(*lead, k)),
            pb_utils.Tensor("indices", indices.reshape(*lead, k)),
            pb_utils.Tensor("probabilities", probs.reshape(*lead, k))])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except UserError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
