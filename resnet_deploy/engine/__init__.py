"""ONNX -> TensorRT / TensorRT-RTX engine: options, build, inspection, reuse. Torch-free.

    from resnet_deploy.engine import BuildOptions, build_or_reuse_engine
    manifest, rebuilt_because = build_or_reuse_engine("r50.fp16.onnx", "r50.fp16.trt-rtx.engine",
                                              BuildOptions(flavour="trt-rtx"), precision="fp16")

This stage compiles a precision ONNX that already exists; making that ONNX is the pipeline's
job (:mod:`resnet_deploy.pipeline`). The runners sit beside it and never import it.
"""

from .build import build_engine, build_or_reuse_engine, inspect_with_gpu, preflight, source_metadata_of
from .network import inspector_precision, network_precision
from .options import DEFAULT_PROFILE, HARDWARE_COMPAT, MAX_OPT_LEVEL, BuildOptions, ProgressCallback, engine_path_for, resolve_profile
from .reuse import REUSE_KEYS, needs_rebuild, request_facts, target_facts

__all__ = ["BuildOptions", "DEFAULT_PROFILE", "HARDWARE_COMPAT", "MAX_OPT_LEVEL", "ProgressCallback", "REUSE_KEYS",
           "build_engine", "build_or_reuse_engine", "engine_path_for", "inspect_with_gpu", "inspector_precision",
           "needs_rebuild", "network_precision", "preflight", "request_facts", "resolve_profile",
           "source_metadata_of", "target_facts"]
