"""Installed versions, found one way for the whole toolkit (manifests, ``doctor``, bench reports).

Imports nothing heavy: the torch-free runner and the Jetson bundle's tools may use it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata

ORT_DISTS = ("onnxruntime-gpu", "onnxruntime")


def dist_version(*names: str) -> str | None:
    """The version of the first of ``names`` that is installed (distribution names), else ``None``."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def onnxruntime_wheel() -> tuple[str | None, str | None]:
    """``(version, distribution)`` of the onnxruntime that ``import onnxruntime`` loads.

    ``onnxruntime`` and ``onnxruntime-gpu`` install the same package folder. Where one sits on
    ``PYTHONPATH`` and the other in site-packages (a device machine with a carried GPU wheel),
    both are "installed" and only the import path decides which runs, so the distribution is
    the one whose files the import would load.
    """
    module = sys.modules.get("onnxruntime")
    origin = getattr(module, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec("onnxruntime")
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
    if origin:
        origin = os.path.realpath(origin)
        for name in ORT_DISTS:
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            if os.path.realpath(str(dist.locate_file("onnxruntime/__init__.py"))) == origin:
                return dist.version, name
    for name in ORT_DISTS:
        v = dist_version(name)
        if v:
            return v, name
    return None, None
