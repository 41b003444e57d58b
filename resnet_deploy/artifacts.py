"""Where every artifact lives, how it is written, and the manifest beside it.

Every stage of the pipeline (export, precision conversion, engine build, packaging) takes
its paths from :func:`artifact_path` and writes through :func:`atomic_write_bytes` or
:func:`atomic_path`, so an interrupted step never leaves a half-written file where a later
step would read it. :func:`verify` is the one check that a file is the one its manifest
describes. Torch-free and onnx-free: the edge bundle vendors this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

DEFAULT_ROOT = Path("engines")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MANIFEST_SUFFIX = ".json"


def check_precision(precision: str) -> str:
    """``" FP16 "`` -> ``"fp16"``; anything that is not one of :data:`PRECISIONS` is a :class:`UserError`."""
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return p


def model_dir(arch: str, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """``engines/resnet50`` for arch ``resnet50``."""
    return Path(root) / arch


def artifact_path(
    arch: str,
    precision: str,
    kind: str = "onnx",
    root: str | os.PathLike[str] = DEFAULT_ROOT,
) -> Path:
    """The one place artifact names are made.

    ``kind`` is ``onnx`` (``resnet50.fp16.onnx``) or an engine flavour such as ``trt`` or
    ``trt-rtx`` (``resnet50.int8.trt.engine``).
    """
    precision = check_precision(precision)
    name = f"{arch}.{precision}.onnx" if kind == "onnx" else f"{arch}.{precision}.{kind}.engine"
    return model_dir(arch, root) / name


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """The manifest sits beside its artifact: ``resnet50.fp32.onnx`` -> ``resnet50.fp32.onnx.json``."""
    p = Path(artifact)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) or raise a one-line :class:`UserError`."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {p}: {e.strerror or e}") from None
    if not os.access(p, os.W_OK):
        raise UserError(f"output folder {p} is not writable")
    return p


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it onto ``final`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``final``
    is left as it was.
    """
    final = Path(final)
    ensure_writable_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644 & ~_umask())  # mkstemp makes 0600; artifacts are shared like any file
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(final, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(artifact: str | os.PathLike[str], facts: dict[str, Any]) -> Path:
    """Write the JSON manifest beside ``artifact`` (atomically) and return its path."""
    path = manifest_path(artifact)
    atomic_write_text(path, json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_manifest(artifact: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the manifest beside ``artifact``; a missing or corrupt one is a :class:`UserError`."""
    path = manifest_path(artifact)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no manifest beside {artifact} (expected {path})") from None
    except (OSError, ValueError) as e:
        raise UserError(f"manifest {path} is unreadable: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"manifest {path} is not a JSON object")
    return data


def verify(path: str | os.PathLike[str], manifest: dict[str, Any], *, what: str = "artifact",
           fix: str = "make it again") -> None:
    """Raise a one-line :class:`UserError` unless ``path`` is the file ``manifest`` describes.

    Engine manifests record ``engine_bytes`` / ``engine_sha256``, the others ``bytes`` /
    ``sha256``; the size is compared first (cheap, catches truncation), then the digest.
    """
    p = Path(path)
    size_key, sha_key = ("engine_bytes", "engine_sha256") if manifest.get("kind") == "engine" else ("bytes", "sha256")
    size = p.stat().st_size
    want = manifest.get(size_key)
    if want is not None and size != want:
        raise UserError(f"{what} {p} is {size} bytes but its manifest says {want}: truncated or replaced, {fix}")
    sha = manifest.get(sha_key)
    if sha is not None and sha256_file(p) != sha:
        raise UserError(f"{what} {p} does not match its manifest (sha256 differs): corrupted or replaced, {fix}")
