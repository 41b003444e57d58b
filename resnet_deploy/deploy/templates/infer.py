#!/usr/bin/env python3
"""Classify images with this bundle's TensorRT engine. Torch-free.

    python3 infer.py --engine @@ENGINE_FILE@@ photo.jpg [more.jpg ...] [--top 5] [--json]

Needs only: tensorrt (JetPack ships it), numpy, Pillow and cuda-python. The runner, the
preprocessing and the top-k code are the resnet-deploy toolkit's own modules, vendored in
``resnet_deploy_edge/`` (one implementation, not a copy of the logic): the same preprocessing
the engine's calibration and parity checks used.

To embed it in an application::

    import sys; sys.path.insert(0, "/path/to/bundle")
    from infer import Classifier
    with Classifier("@@ENGINE_FILE@@") as clf:
        print(clf.classify(["photo.jpg"])[0][0])   # {"rank": 1, "index": ..., "label": ..., "probability": ...}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from resnet_deploy_edge.classify import infer_all, top_k  # noqa: E402
from resnet_deploy_edge.errors import UserError  # noqa: E402
from resnet_deploy_edge.labels import load_labels  # noqa: E402
from resnet_deploy_edge.preprocess import Preprocess, load_image, preprocess_image  # noqa: E402

BUNDLE_MANIFEST = HERE / "manifest.json"
DEFAULT_ENGINE = HERE / "@@ENGINE_FILE@@"


def read_bundle_manifest(path: Path = BUNDLE_MANIFEST) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"bundle manifest not found: {path}") from None
    except ValueError as e:
        raise UserError(f"bundle manifest {path} is not valid JSON: {e}") from None


def recipe_from_manifest(manifest: dict) -> Preprocess:
    """The preprocessing the model was exported, calibrated and checked with."""
    p = manifest["preprocess"]
    if p.get("layout", "NCHW") != "NCHW":
        raise UserError(f"this infer.py feeds NCHW tensors; the bundle says {p['layout']}")
    return Preprocess(image_size=int(p["image_size"]), resize=int(p["resize"]),
                      mean=tuple(float(v) for v in p["mean"]), std=tuple(float(v) for v in p["std"]))


def preprocess_paths(paths, recipe: Preprocess) -> np.ndarray:
    """Image files -> float32 [N, 3, size, size], exactly as the toolkit preprocesses them."""
    if not paths:
        raise UserError("no images given")
    return np.stack([preprocess_image(load_image(p), recipe) for p in paths])


def to_ppm_bytes(tensor: np.ndarray, recipe: Preprocess) -> bytes:
    """Undo the normalisation of one preprocessed [3, H, W] image -> binary PPM of the centre crop.

    The C++ example normalises a PPM with the same float32 arithmetic, so it sees the same tensor.
    """
    mean = np.asarray(recipe.mean, np.float64)[:, None, None]
    std = np.asarray(recipe.std, np.float64)[:, None, None]
    rgb = np.clip(np.rint((tensor.astype(np.float64) * std + mean) * 255.0), 0, 255).astype(np.uint8)
    h, w = rgb.shape[1:]
    return f"P6\n{w} {h}\n255\n".encode() + np.ascontiguousarray(rgb.transpose(1, 2, 0)).tobytes()


class Classifier:
    """The engine, its preprocessing and labels: ``classify(paths)`` -> top-k per image."""

    def __init__(self, engine=DEFAULT_ENGINE, *, labels=None, device: int = 0, cuda_graph: bool = False,
                 runner=None, manifest: dict | None = None, dla_core: int | None = None):
        self.manifest = manifest or read_bundle_manifest()
        self.recipe = recipe_from_manifest(self.manifest)
        classes = int(self.manifest["model"]["num_classes"])
        self.labels = load_labels(labels or HERE / self.manifest["labels"]["file"], classes)
        if runner is None:  # any object with infer(batch) -> logits works (tests pass one)
            engine = Path(engine)
            if not engine.is_file():
                raise UserError(f"engine not found: {engine}; build it on this device first: ./build_engine.sh")
            from resnet_deploy_edge.runners.tensorrt import TensorRTRunner

            # a DLA engine (build_engine.sh --dla N) runs on the core its manifest names unless dla_core says otherwise
            runner = TensorRTRunner(engine, device=device, cuda_graph=cuda_graph, dla_core=dla_core).open()
        self.runner = runner

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return infer_all(self.runner, batch)

    def classify(self, paths, k: int = 5) -> list[list[dict]]:
        return top_k(self.logits(preprocess_paths(paths, self.recipe)), self.labels, k)

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close:
            close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Classify images with this bundle's TensorRT engine.")
    ap.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    ap.add_argument("--engine", type=Path, default=DEFAULT_ENGINE, help=f"engine file (default {DEFAULT_ENGINE.name})")
    ap.add_argument("--labels", type=Path, default=None, help="one class name per line (default: the bundle's labels)")
    ap.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    ap.add_argument("--dla", type=int, default=None, metavar="N",
                    help="DLA core for a DLA engine (default: the core it was built for)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--save-input", type=Path, default=None, metavar="FILE.npy",
                    help="only preprocess: write the float32 NCHW batch (.npy) for the C++ example, then exit")
    ap.add_argument("--save-ppm", type=Path, default=None, metavar="FILE.ppm",
                    help="only preprocess: write the first image's centre crop as PPM for the C++ example, then exit")
    a = ap.parse_args(argv)
    try:
        manifest = read_bundle_manifest()
        recipe = recipe_from_manifest(manifest)
        if a.save_input or a.save_ppm:
            batch = preprocess_paths(a.images, recipe)
            if a.save_input:
                np.save(a.save_input, batch)
                print(f"wrote {a.save_input} {list(batch.shape)} float32")
            if a.save_ppm:
                a.save_ppm.write_bytes(to_ppm_bytes(batch[0], recipe))
                print(f"wrote {a.save_ppm} ({recipe.image_size}x{recipe.image_size} centre crop of {a.images[0]})")
            return 0
        for p in a.images:  # fail on a bad image before loading the engine
            load_image(p)
        with Classifier(a.engine, labels=a.labels, device=a.device, manifest=manifest, dla_core=a.dla) as clf:
            rows = clf.classify(a.images, a.top)
            described = clf.runner.describe()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        return 130
    if a.json:
        print(json.dumps({"engine": str(a.engine), "runner": described,
                          "predictions": [{"image": str(p), "top": r} for p, r in zip(a.images, rows)]}))
    else:
        for p, r in zip(a.images, rows):
            print(p)
            for item in r:
                print(f"  {item['rank']}. {item['label']:<40} {item['probability']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
