"""Triton python-backend model: encoded images (JPEG, PNG, ...) -> the classifier's input tensor.

Written by `resnet-deploy package --target triton`. The preprocessing is the toolkit's own
(``resnet_deploy_serving/preprocess.py``, copied verbatim: Pillow and numpy, no torch) with the
recipe the model records (``resnet_deploy.recipe`` in config.pbtxt), so the server computes what
`resnet-deploy predict` computes for the same file. An image that cannot be decoded fails its own
request with one line; the other requests of the batch are served.
"""

import io
import json

import numpy as np
import triton_python_backend_utils as pb_utils
from resnet_deploy_serving.errors import UserError
from resnet_deploy_serving.preprocess import Preprocess, load_image, preprocess_image

DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        recipe = json.loads(config["parameters"]["resnet_deploy.recipe"]["string_value"])
        self.recipe = Preprocess(image_size=int(recipe["image_size"]), resize=int(recipe["resize"]),
                                 mean=tuple(recipe["mean"]), std=tuple(recipe["std"]))
        out = config["output"][0]
        self.output_name, self.dtype = out["name"], DTYPES.get(out["data_type"], np.float32)

    def _one(self, request):
        data = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        shape = data.shape  # [batch, 1] (dynamic batch) or [N, 1] (a fixed-batch classifier)
        arrays = []
        for i, blob in enumerate(data.reshape(-1)):
            raw = blob if isinstance(blob, bytes) else bytes(blob)
            arrays.append(preprocess_image(load_image(io.BytesIO(raw), name=f"image {i} of the request"), self.recipe))
        batch = np.stack(arrays).astype(self.dtype).reshape(*shape[:-1], *arrays[0].shape)
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, np.ascontiguousarray(batch))])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except UserError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
