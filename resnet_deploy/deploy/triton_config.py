"""Triton ``config.pbtxt`` files, built as Triton's own ``ModelConfig`` protobuf and printed in text format.

``tritonclient`` ships the protobuf (``tritonclient.grpc.model_config_pb2``); building the message
and printing it with ``google.protobuf.text_format`` escapes every string, so a model name, a label
or a metadata value with quotes or newlines cannot change the configuration's structure.

What a repository holds for one classifier ``NAME`` (see :mod:`resnet_deploy.deploy.triton`):

* ``NAME``: the classifier (``onnxruntime_onnx``, OpenVINO's backend on the same ``model.onnx``, or
  ``tensorrt_plan``), the model's
  ``resnet_deploy.*`` metadata in ``parameters`` (so a client reads arch, precision, weights and the
  preprocessing recipe from the live server);
* ``NAME_preprocess`` (python backend): encoded image bytes -> the classifier's input tensor;
* ``NAME_topk`` (python backend): logits -> top-k labels, class indices and probabilities;
* ``NAME_images``: the ensemble of the three, image bytes in, logits and top-k out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UserError

INSTALL = "pip install 'tritonclient[grpc]' (Triton's ModelConfig protobuf comes with it)"
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
# Triton's instance kinds by --instance-kind: "auto" is KIND_AUTO (GPU instances where the server has a
# GPU, else CPU ones), so one ONNX repository loads on a CPU-only server and uses the GPU on a GPU server.
INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
# What serves an ONNX classifier: Triton's ONNX Runtime backend (a platform), or its OpenVINO backend, which reads
# model.onnx when told so (default_model_filename) and takes OpenVINO's settings as parameters.
ONNX_BACKENDS = ("onnxruntime", "openvino")
OPENVINO_PARAMETERS = (("PERFORMANCE_HINT", "LATENCY"), ("NUM_STREAMS", "1"))
ROLE_KEY = "resnet_deploy.role"
CLASSIFIER_KEY = "resnet_deploy.classifier"
IMAGE_INPUT = "image"
ENSEMBLE_OUTPUTS = ("logits", "labels", "indices", "probabilities")


def model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError(f"writing a Triton repository needs Triton's ModelConfig protobuf: {INSTALL}") from None
    return model_config_pb2


def config_text(config: Any, note: str = "") -> str:
    """The text format of a ``ModelConfig``, under a one-line comment (control characters removed)."""
    from google.protobuf import text_format

    safe = "".join(c if c.isprintable() else " " for c in note)
    return (f"# {safe}\n" if safe else "") + text_format.MessageToString(config)


def parse(config_text: str) -> Any:
    """A ``config.pbtxt`` text back as a ``ModelConfig`` (what the tests and the server read)."""
    from google.protobuf import text_format

    return text_format.Parse(config_text, model_config_pb2().ModelConfig())


def triton_type(dtype: str, what: str) -> str:
    if dtype not in TRITON_TYPES:
        raise UserError(f"{what} has type {dtype}, which Triton cannot serve")
    return TRITON_TYPES[dtype]


@dataclass(frozen=True)
class Tensor:
    name: str
    triton_type: str        # "TYPE_FP32"
    dims: tuple[int, ...]   # without the batch dimension where max_batch_size > 0


@dataclass(frozen=True)
class Classifier:
    """What the configs of one classifier and its ensemble are made from."""

    name: str
    platform: str                      # onnxruntime_onnx or tensorrt_plan; "" where ``backend`` names it
    max_batch_size: int                # 0: a fixed-batch model, dims carry the batch
    input: Tensor
    output: Tensor
    preferred: tuple[int, ...] = ()
    queue_delay_us: int = 100
    instances: int = 1
    kind: str = "KIND_AUTO"
    profile: str | None = None         # a plan's optimization profile
    label_file: str | None = "labels.txt"
    parameters: tuple[tuple[str, str], ...] = ()
    backend: str = ""                  # a backend named instead of a platform (openvino)
    model_filename: str = ""           # default_model_filename, where the backend's own default is another

    @property
    def serves_with(self) -> str:
        return self.platform or self.backend

    @property
    def fixed_batch(self) -> int | None:
        return self.input.dims[0] if self.max_batch_size == 0 else None


def _add_tensor(repeated: Any, t: Tensor, **extra: Any) -> Any:
    mc = model_config_pb2()
    return repeated.add(name=t.name, data_type=mc.DataType.Value(t.triton_type), dims=list(t.dims), **extra)


def _parameters(config: Any, pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> None:
    for key, value in pairs:
        config.parameters[key].string_value = str(value)


def _batching(config: Any, preferred: tuple[int, ...], delay_us: int) -> None:
    if config.max_batch_size > 0:
        config.dynamic_batching.preferred_batch_size.extend(list(preferred))
        config.dynamic_batching.max_queue_delay_microseconds = delay_us


def classifier_config(c: Classifier) -> Any:
    mc = model_config_pb2()
    config = mc.ModelConfig(name=c.name, platform=c.platform, backend=c.backend, max_batch_size=c.max_batch_size,
                            default_model_filename=c.model_filename)
    _add_tensor(config.input, c.input)
    _add_tensor(config.output, c.output, **({"label_filename": c.label_file} if c.label_file else {}))
    _batching(config, c.preferred, c.queue_delay_us)
    group = config.instance_group.add(count=c.instances, kind=mc.ModelInstanceGroup.Kind.Value(c.kind))
    if c.profile is not None:
        group.profile.append(c.profile)
    _parameters(config, (*c.parameters, (ROLE_KEY, "classifier")))
    return config


def _python_model(name: str, c: Classifier, role: str, extra: list[tuple[str, str]]) -> Any:
    mc = model_config_pb2()
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=c.max_batch_size)
    _batching(config, (), c.queue_delay_us)
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    _parameters(config, [(ROLE_KEY, role), (CLASSIFIER_KEY, c.name), *extra])
    return config


def _batch_dims(c: Classifier, *dims: int) -> tuple[int, ...]:
    """Per-image dims, with the fixed batch in front for a fixed-batch classifier."""
    return (c.fixed_batch, *dims) if c.fixed_batch is not None else tuple(dims)


def preprocess_config(c: Classifier, recipe_json: str) -> Any:
    """``NAME_preprocess``: one encoded image (BYTES) per batch entry -> the classifier's input."""
    config = _python_model(f"{c.name}_preprocess", c, "preprocess", [("resnet_deploy.recipe", recipe_json)])
    _add_tensor(config.input, Tensor(IMAGE_INPUT, "TYPE_STRING", _batch_dims(c, 1) if c.fixed_batch else (1,)))
    _add_tensor(config.output, c.input)
    return config


def topk_config(c: Classifier, top: int) -> Any:
    """``NAME_topk``: logits -> the ``top`` labels (BYTES), class indices (INT64) and probabilities (FP32)."""
    config = _python_model(f"{c.name}_topk", c, "topk", [("resnet_deploy.top", str(top))])
    _add_tensor(config.input, c.output)
    for name, kind in zip(ENSEMBLE_OUTPUTS[1:], ("TYPE_STRING", "TYPE_INT64", "TYPE_FP32")):
        _add_tensor(config.output, Tensor(name, kind, _batch_dims(c, top)))
    return config


def ensemble_config(c: Classifier, top: int) -> Any:
    """``NAME_images``: image bytes -> preprocess -> classifier -> top-k, one request per batch of images."""
    mc = model_config_pb2()
    config = mc.ModelConfig(name=f"{c.name}_images", platform="ensemble", max_batch_size=c.max_batch_size)
    _add_tensor(config.input, Tensor(IMAGE_INPUT, "TYPE_STRING", _batch_dims(c, 1) if c.fixed_batch else (1,)))
    _add_tensor(config.output, Tensor("logits", c.output.triton_type, c.output.dims))
    for name, kind in zip(ENSEMBLE_OUTPUTS[1:], ("TYPE_STRING", "TYPE_INT64", "TYPE_FP32")):
        _add_tensor(config.output, Tensor(name, kind, _batch_dims(c, top)))
    steps = config.ensemble_scheduling.step
    pre = steps.add(model_name=f"{c.name}_preprocess", model_version=-1)
    pre.input_map[IMAGE_INPUT] = IMAGE_INPUT
    pre.output_map[c.input.name] = "_pixels"
    clf = steps.add(model_name=c.name, model_version=-1)
    clf.input_map[c.input.name] = "_pixels"
    clf.output_map[c.output.name] = "logits"
    post = steps.add(model_name=f"{c.name}_topk", model_version=-1)
    post.input_map[c.output.name] = "logits"
    for name in ENSEMBLE_OUTPUTS[1:]:
        post.output_map[name] = name
    _parameters(config, [(ROLE_KEY, "ensemble"), (CLASSIFIER_KEY, c.name)])
    return config


__all__ = ["CLASSIFIER_KEY", "Classifier", "ENSEMBLE_OUTPUTS", "IMAGE_INPUT", "INSTANCE_KINDS", "ONNX_BACKENDS", "OPENVINO_PARAMETERS",
           "ROLE_KEY", "TRITON_TYPES",
           "Tensor", "classifier_config", "ensemble_config", "config_text", "model_config_pb2", "parse", "preprocess_config",
           "topk_config", "triton_type"]
