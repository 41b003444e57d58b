"""The Jetson / edge bundle: the precision ONNX plus what the device needs to build and run its engine.

TensorRT engines run only on the GPU and TensorRT version that built them, so the bundle ships
the ONNX (precision baked in) and a ``build_engine.sh`` that runs ``trtexec`` on the device.
``infer.py`` runs the engine with the toolkit's own torch-free runner, preprocessing and top-k
code, vendored into ``resnet_deploy_edge/`` (copied from this installation, not rewritten).
"""

from __future__ import annotations

import ast
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import Snapshot, sha256_file
from ..engine import resolve_profile
from ..errors import UserError
from ..labels import load_labels
from ..progress import Progress, quiet
from .common import check_sources, onnx_facts, recipe_dict, render, staged_folder, write_json

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
EDGE_PACKAGE = "resnet_deploy_edge"
# The torch-free modules the edge runner needs, copied verbatim (relative imports keep working).
VENDORED = ("errors.py", "schema.py", "artifacts.py", "preprocess.py", "labels.py", "classify.py", "_native/__init__.py",
            "_native/cuda.py", "_native/trt.py", "runners/base.py", "runners/device_buffers.py", "runners/tensorrt_loader.py",
            "runners/tensorrt.py")
GENERATED_INIT = {
    "__init__.py": '"""Vendored copy of resnet-deploy {version}\'s torch-free runner, preprocessing and top-k code.\n\n'
                   'Copied verbatim by `resnet-deploy package`; do not edit (re-package instead)."""\n\n'
                   '__version__ = "{version}"\n',
    "runners/__init__.py": '"""The TensorRT runner (vendored from resnet-deploy {version})."""\n\n'
                           'from .base import Runner\n\n__all__ = ["Runner"]\n',
}
BUNDLE_FILES = ("build_engine.sh", "infer.py", "engine_manifest.py", "README.md", "requirements.txt",
                "cpp/CMakeLists.txt", "cpp/main.cpp", "cpp/image_io.hpp")
EXECUTABLE = ("build_engine.sh", "infer.py", "engine_manifest.py")
PRECISION_NOTES = {"fp32": "float32 throughout", "fp16": "FP16 tensors from ModelOpt AutoCast, float32 input/output",
                   "bf16": "BF16 tensors, float32 input/output", "int8": "explicit INT8 Q/DQ nodes from ModelOpt PTQ"}


def vendored_imports(rel: str, source: str) -> set[str]:
    """Module-level package-relative imports of the vendored file ``rel``, as paths (``runners/base``, ``errors``)."""
    package = rel.split("/")[:-1]
    found = set()
    # Module-level imports only (also inside a top-level try/if): an import inside a function runs
    # only if that function is called, and the bundle's runner path is checked by the tests.
    top: list[ast.stmt] = []
    pending = list(ast.parse(source).body)
    while pending:
        stmt = pending.pop()
        top.append(stmt)
        if isinstance(stmt, (ast.Try, ast.If)):
            pending.extend([*stmt.body, *stmt.orelse, *getattr(stmt, "finalbody", []),
                            *(s for h in getattr(stmt, "handlers", []) for s in h.body)])
    for node in top:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            found.add("/".join([*base, *(node.module or "").split(".")]).strip("/"))
    return found


def vendor_package(dest: Path) -> list[str]:
    """Copy the torch-free modules into ``dest/resnet_deploy_edge``; fail if one imports something not copied."""
    pkg = dest / EDGE_PACKAGE
    have = {name[:-len("/__init__.py")] if name.endswith("/__init__.py") else name[:-3] for name in VENDORED} | {"runners"}
    written = []
    for rel in VENDORED:
        src = PACKAGE_ROOT / rel
        missing = vendored_imports(rel, src.read_text()) - have
        if missing:
            raise RuntimeError(f"vendored {rel} imports {', '.join(sorted(missing))}, which is not vendored; add it to VENDORED")
        out = pkg / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        written.append(f"{EDGE_PACKAGE}/{rel}")
    for rel, text in GENERATED_INIT.items():
        (pkg / rel).write_text(text.format(version=__version__))
        written.append(f"{EDGE_PACKAGE}/{rel}")
    return written


def write_jetson_bundle(onnx: str | os.PathLike[str] | Snapshot, out: str | os.PathLike[str], *, labels: str | os.PathLike[str] | None = None,
                        min_batch: int | None = None, opt_batch: int | None = None, max_batch: int | None = None,
                        force: bool = False, progress: Progress = quiet) -> dict[str, Any]:
    """Write the edge bundle for ``onnx`` (a file or a :class:`Snapshot` of one) into the folder ``out``;
    return the bundle manifest. The ONNX is read once: the facts, the copy and its sha256 are of those bytes."""
    snap = onnx if isinstance(onnx, Snapshot) else Snapshot.take(onnx, what="ONNX model")
    onnx = snap.path
    out = Path(out)
    check_sources(out, [onnx])
    facts = onnx_facts(snap)
    names = load_labels(labels, facts["num_classes"], facts["metadata"].get("label_set", "imagenet"))
    mn, opt, mx = resolve_profile([min_batch, opt_batch, max_batch], facts["fixed_batch"])
    meta = facts["metadata"]
    arch = facts["arch"]  # a plain name (metadata checked, or made from the file name): no path, no shell word
    precision = facts["precision"]
    recipe = recipe_dict(meta)
    if [recipe["image_size"], recipe["image_size"]] != facts["input"]["shape"][2:]:
        raise UserError(f"{onnx} takes {facts['input']['shape'][2:]} images but records preprocessing to {recipe['image_size']}")
    onnx_name = f"{arch}.{precision}.onnx"
    engine_name = f"{arch}.{precision}.trt.engine"
    sample = "x".join(str(d) for d in facts["input"]["shape"][1:])
    values = {
        "TOOLKIT_VERSION": __version__, "ARCH": arch, "PRECISION": precision, "ONNX_FILE": onnx_name,
        "ENGINE_FILE": engine_name, "INPUT_NAME": facts["input"]["name"], "SAMPLE_SHAPE": sample,
        "FIXED_BATCH": facts["fixed_batch"] or "", "MIN": mn, "OPT": opt, "MAX": mx, "ONNX_NODES": facts["nodes"],
        "IMAGE_SIZE": recipe["image_size"], "RESIZE": recipe["resize"],
        "MEAN": ", ".join(f"{v!r}F" for v in recipe["mean"]), "STD": ", ".join(f"{v!r}F" for v in recipe["std"]),
        "MEAN_TEXT": recipe["mean"], "STD_TEXT": recipe["std"], "NUM_CLASSES": facts["num_classes"],
        "BUNDLE_NAME": out.name, "CREATED": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "PRECISION_NOTE": PRECISION_NOTES.get(precision, precision),
    }
    progress(f"writing the {precision} edge bundle for {arch} into {out}")
    with staged_folder(out, force) as tmp:
        snap.write(tmp / onnx_name)
        (tmp / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        for rel in BUNDLE_FILES:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(render(rel, values))
            if rel in EXECUTABLE:
                dest.chmod(0o755)
        vendored = vendor_package(tmp)
        manifest = {
            "kind": "jetson-bundle",
            "toolkit_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "target": "TensorRT 10.x (JetPack 6) or 11.x, trtexec",
            "model": {
                "arch": arch, "precision": precision, "file": onnx_name, "source": str(onnx),
                "sha256": snap.sha256, "bytes": len(snap.data),
                "opset": facts["opset"], "nodes": facts["nodes"], "num_classes": facts["num_classes"],
                "input": facts["input"], "output": facts["output"], "metadata": meta,
                "weights_source": meta.get("weights_source"), "weights_sha256": meta.get("weights_sha256"),
            },
            "preprocess": recipe,
            "labels": {"file": "labels.txt", "count": len(names), "source": str(labels) if labels else facts["metadata"].get("label_set", "imagenet")},
            "engine": {"file": engine_name, "min_batch": mn, "opt_batch": opt, "max_batch": mx,
                       "fixed_batch": facts["fixed_batch"], "build": "./build_engine.sh"},
            "vendored": vendored,
        }
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest["files"] = {rel: sha256_file(tmp / rel) for rel in files}
        write_json(tmp / "manifest.json", manifest)
    return {"path": str(out), **manifest}


__all__ = ["VENDORED", "EDGE_PACKAGE", "vendor_package", "vendored_imports", "write_jetson_bundle"]
