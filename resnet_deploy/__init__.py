"""resnet-deploy: ResNets from PyTorch to verified ONNX and TensorRT engines.

Public entry points (imported lazily so torch-free parts, such as the TensorRT runner,
work on machines without torch)::

    from resnet_deploy import create_model, export, parity
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    # (evaluate and predict are modules of this package too: they stay resnet_deploy.api.evaluate / .predict)
    **{name: "resnet_deploy.api" for name in ("create_model", "describe", "export", "quantize", "build", "parity", "diagnose")},
    "UserError": "resnet_deploy.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnet_deploy' has no attribute {name!r}")
