"""Every TensorRT / TensorRT-RTX Python name the builder, the runner and doctor touch, and where.

The table is the project's contract with NVIDIA's bindings. ``tests/engine/test_trt_api_contract.py``
checks it both ways against the real ``tensorrt_bindings`` wheels from PyPI (TensorRT 10.3 as on
JetPack 6, the newest 10.x, the newest 11.x; they install without libnvinfer, and their compiled
module holds every bound name) and against the installed ``tensorrt_rtx``:

* every name here exists in each version its ``reach`` says the code runs it on, unless the code
  only reaches it through ``getattr`` / ``hasattr`` (then it may be missing, and the code copes);
* every TensorRT attribute the code uses is in this table (the test reads the modules' syntax
  trees), so a new call cannot slip past the check.

Reach: ``trt10`` TensorRT 10.x, ``trt11`` TensorRT 11.x, ``rtx`` TensorRT-RTX. Names are checked
one by one, not per class (the compiled module does not say which enum a value belongs to).
Names the code builds at run time (``getattr(trt.BuilderFlag, name)``) are in :data:`DYNAMIC`.
"""

from __future__ import annotations

ALL = ("trt10", "trt11", "rtx")
TRT = ("trt10", "trt11")
RTX = ("rtx",)
TRT10 = ("trt10",)

TRT_NAMES: dict[str, tuple[str, ...]] = {
    # module level (and the dunders the code reads from the module)
    "__name__": ALL, "__version__": ALL, "__init__": ALL, "__members__": ALL,
    "nptype": ALL, "get_nv_onnx_parser_version": ALL,
    "Builder": ALL, "Runtime": ALL, "OnnxParser": ALL, "ILogger": ALL, "Severity": ALL, "ERROR": ALL, "WARNING": ALL,
    "IProgressMonitor": ALL,
    # network definition, parser
    "NetworkDefinitionCreationFlag": ALL, "STRONGLY_TYPED": ALL, "create_network": ALL, "get_flag": ALL,
    "num_inputs": ALL, "num_outputs": ALL, "num_layers": ALL, "get_input": ALL, "get_output": ALL, "get_layer": ALL,
    "name": ALL, "shape": ALL, "dtype": ALL, "type": ALL, "LayerType": ALL, "CONSTANT": ALL,
    "parse": ALL, "num_errors": ALL, "get_error": ALL, "code": ALL, "desc": ALL, "node": ALL, "node_name": ALL,
    "node_operator": ALL,
    # builder configuration
    "create_builder_config": ALL, "create_optimization_profile": ALL, "set_shape": ALL,
    "add_optimization_profile": ALL, "build_serialized_network": ALL, "progress_monitor": ALL,
    "builder_optimization_level": ALL, "set_memory_pool_limit": ALL, "MemoryPoolType": ALL, "WORKSPACE": ALL,
    "ProfilingVerbosity": ALL, "DETAILED": ALL, "profiling_verbosity": ALL, "set_flag": ALL, "BuilderFlag": ALL,
    "VERSION_COMPATIBLE": TRT, "HardwareCompatibilityLevel": TRT, "hardware_compatibility_level": TRT,
    "create_timing_cache": TRT, "set_timing_cache": TRT, "get_timing_cache": TRT, "serialize": TRT,
    "ComputeCapability": RTX, "set_compute_capability": RTX, "num_compute_capabilities": RTX,
    # DLA (Jetson AGX / NX Orin: TensorRT 10 on JetPack 6, 11.4+ on JetPack 7.2.2+)
    "DeviceType": TRT, "DLA": TRT, "default_device_type": TRT, "DLA_core": TRT, "num_DLA_cores": TRT,
    "GPU_FALLBACK": TRT, "can_run_on_DLA": TRT,
    # runtime, engine, execution context
    "deserialize_cuda_engine": ALL, "engine_host_code_allowed": TRT, "get_engine_validity": RTX,
    "EngineInvalidityDiagnostics": RTX, "create_engine_inspector": ALL, "get_engine_information": ALL,
    "LayerInformationFormat": ALL, "JSON": ALL,
    "num_io_tensors": ALL, "get_tensor_name": ALL, "get_tensor_mode": ALL, "TensorIOMode": ALL, "INPUT": ALL,
    "get_tensor_dtype": ALL, "get_tensor_profile_shape": ALL, "create_execution_context": ALL,
    "set_input_shape": ALL, "get_tensor_shape": ALL, "set_tensor_address": ALL, "execute_async_v3": ALL,
    "create_runtime_config": RTX, "cuda_graph_strategy": RTX, "CudaGraphStrategy": RTX, "WHOLE_GRAPH_CAPTURE": RTX,
}

# Names the code composes at run time, always through getattr(..., None) / hasattr:
DYNAMIC: dict[str, tuple[str, ...]] = {
    "FP16": TRT10, "BF16": TRT10, "INT8": TRT10,  # legacy weak-typing flags (--legacy-precision-flags)
    "QUANTIZE": ALL, "DEQUANTIZE": ALL,  # LayerType members counted as Q/DQ layers
    "CURRENT": RTX,  # ComputeCapability for --compute-capability current (SM<cc> members are checked when asked)
}

__all__ = ["ALL", "DYNAMIC", "RTX", "TRT", "TRT10", "TRT_NAMES"]
