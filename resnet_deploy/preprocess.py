"""ImageNet evaluation preprocessing with Pillow and numpy only (no torch).

resize the shorter side to 256 (bilinear, antialiased as Pillow does), centre-crop 224,
scale to [0, 1], normalise by the ImageNet mean/std, HWC -> CHW float32. The same function
serves parity, calibration, eval, predict and the edge bundle's ``infer.py``, so what an
engine is checked with is what it is fed in production.
"""

from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing recipe; recorded in every manifest so deployments reproduce it."""

    image_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "NCHW"
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std), "layout": self.layout, "interpolation": self.interpolation}

    def __call__(self, image) -> np.ndarray:
        return preprocess_image(image, self)


DEFAULT = Preprocess()


def recipe_from_metadata(meta: dict[str, Any]) -> Preprocess:
    """The preprocessing an artifact records (ONNX ``resnet_deploy.*`` metadata, an engine's
    ``source_metadata``, a bundle manifest); ImageNet's where it records none.

    Values may be strings as ONNX metadata stores them (``"[0.485, 0.456, 0.406]"``) or lists.
    """
    def floats(key: str, default: tuple) -> tuple:
        raw = meta.get(key)
        if raw is None or raw == "":
            return default
        try:
            values = tuple(float(v) for v in (ast.literal_eval(raw) if isinstance(raw, str) else raw))
        except (ValueError, TypeError, SyntaxError):
            raise UserError(f"the model records an unreadable {key!r}: {raw!r}") from None
        if len(values) != 3:
            raise UserError(f"the model records {key!r} with {len(values)} values, expected 3")
        if not all(math.isfinite(v) for v in values):
            raise UserError(f"the model records {key!r} with a value that is not finite: {raw!r}")
        return values

    base = DEFAULT
    try:
        size = int(meta.get("image_size", base.image_size))
        resize = int(meta.get("resize", round(size * base.resize / base.image_size)))
    except (ValueError, TypeError):
        raise UserError(f"the model records an unreadable image size: {meta.get('image_size')!r}") from None
    return Preprocess(image_size=size, resize=resize, mean=floats("mean", base.mean), std=floats("std", base.std))


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """An image array of any depth as uint8, scaled rather than clipped.

    uint8 stays; uint16 (16-bit PNG/TIFF) is scaled from 0..65535; other integers (Pillow's 32-bit
    ``I`` mode holds 16-bit files) stay when they fit 0..255, else are scaled from 0..65535 (or their
    type's range); floats from 0..1 (or, when they go beyond 1, from 0..255); booleans become 0/255.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if arr.dtype != np.uint16 and lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        top = 65535.0 if lo >= 0 and hi <= 65535 else float(np.iinfo(arr.dtype).max)
        return np.clip(np.rint(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    arr = np.nan_to_num(arr.astype(np.float64))
    scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def to_rgb_pil(image):
    """Any PIL image or numpy array (gray, RGB, RGBA, bool, 16-bit, float) -> an 8-bit RGB PIL image."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(to_8bit(image))
    elif image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # deep grayscale: scale, do not saturate
        image = Image.fromarray(to_8bit(np.asarray(image)))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def preprocess_image(image, recipe: Preprocess = DEFAULT) -> np.ndarray:
    """One image -> float32 [3, size, size]."""
    img = to_rgb_pil(image)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = recipe.resize, int(recipe.resize * long / short)  # torchvision's Resize rule
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - recipe.image_size) / 2.0))
    top = int(round((new_h - recipe.image_size) / 2.0))
    img = img.crop((left, top, left + recipe.image_size, top + recipe.image_size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(recipe.mean, np.float32)) / np.asarray(recipe.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image(path: str | os.PathLike[str] | IO[bytes], name: str | None = None):
    """Open and fully decode an image file (or a binary file object, called ``name`` in messages: a
    served request's bytes); a missing or undecodable image is a :class:`UserError`."""
    shown = path if name is None else name
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise UserError(f"image not found: {shown}") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"refusing {shown}: {e} (a decompression bomb, or an image far larger than a model needs)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot decode {shown if name is not None else f'image {shown}'}: {e}") from None


# Real photographs that scikit-image ships inside its wheel (no download). "camera" is grayscale
# and exercises the conversion path.
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina", "camera")


@dataclass
class SampleSet:
    names: list[str] = field(default_factory=list)
    batch: np.ndarray | None = None


def sample_photos(recipe: Preprocess = DEFAULT, names: Iterable[str] = SAMPLE_IMAGES) -> SampleSet:
    """scikit-image's bundled photographs, preprocessed: the embedded default input everywhere."""
    try:
        import skimage.data
    except ImportError:
        raise UserError("scikit-image is needed for the bundled sample photographs: pip install scikit-image") from None
    names = list(names)
    return SampleSet(names, np.stack([preprocess_image(getattr(skimage.data, n)(), recipe) for n in names]))


def augmented_photos(n: int, recipe: Preprocess = DEFAULT, seed: int = 0) -> np.ndarray:
    """``n`` varied views (random crops, flips, scales) of the bundled photographs.

    Used where more distinct real images are needed than scikit-image ships, e.g. to
    re-estimate BatchNorm statistics of a random-weight model.
    """
    import skimage.data  # a dependency of the toolkit, not of the edge bundle that vendors this module

    rng = np.random.default_rng(seed)
    sources = [to_rgb_pil(getattr(skimage.data, name)()) for name in SAMPLE_IMAGES]
    out = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        frac = rng.uniform(0.35, 1.0)
        cw, ch = max(32, int(w * frac)), max(32, int(h * frac))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        view = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(preprocess_image(view, recipe))
    return np.stack(out)
