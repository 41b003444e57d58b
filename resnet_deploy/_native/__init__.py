"""Access to the native libraries, torch-free and builder-free: CUDA through cuda-python
(:mod:`.cuda`) and the TensorRT / TensorRT-RTX Python modules (:mod:`.trt`).

The engine builder, the TensorRT runner, ``doctor`` and the edge bundle's tools all come here;
nothing here builds an engine.
"""
