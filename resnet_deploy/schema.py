"""What a file read back may hold before any stage trusts it: plain names, bounded JSON, manifests of the right shape.

A manifest is edited by hand now and then; a reader that meets ``"min_batch": "abc"`` deep inside a stage
fails with a traceback. So every manifest is checked once, where it is read (:func:`check_manifest`): the
fields a reader uses have the right types, and an engine's has the ones it cannot do without. JSON is read
only from a regular file of bounded size (a FIFO or ``/dev/zero`` would hang or fill memory), and nesting
too deep for the parser is one line. Torch-free, standard library only (the edge bundle vendors it).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import UserError

# What may become a file or folder name, a shell word or a config string: an architecture, a model name, a
# tensor name read from a file. ``fullmatch`` (``$`` would also match before a trailing newline).
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A graph's tensor names (``input``, ``input.1``, TensorFlow's ``input_1:0``, ``/stem/conv``): no quote, blank,
# newline or shell character, so they sit safely in a double-quoted script word or config string.
TENSOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,255}")
PRECISION_NAMES = ("fp32", "fp16", "bf16", "int8")
MAX_JSON_BYTES = 64 << 20   # a manifest is a few kB; a results.json of a large sweep a few MB


def safe_name(value: Any, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``_ . -``, not starting with ``.`` or ``-``, at most
    128 characters), else a one-line :class:`UserError`: such values end up in paths, scripts and configs."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise UserError(f"{what} {value!r} is not a plain name (letters, digits, '_', '.', '-'; at most 128, "
                        "not starting with '.' or '-'): refused, it would become a file name or a script word")
    return value


def tensor_name(value: Any, what: str) -> str:
    """``value`` if it is a tensor name :data:`TENSOR_NAME` allows, else a one-line :class:`UserError`."""
    if not isinstance(value, str) or not TENSOR_NAME.fullmatch(value):
        raise UserError(f"{what} {value!r} has characters a tensor name here may not (letters, digits, '_', '.', ':', "
                        "'/', '-'): refused, it would reach a script or a config file; rename it in the ONNX")
    return value


def read_regular_text(path: str | os.PathLike[str], what: str, limit: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of ``path`` if it is a regular file of at most ``limit`` bytes; else one :class:`UserError`.

    Opened without blocking and checked with ``fstat`` on the open file (a FIFO would block ``open`` itself,
    a device or ``/proc`` file would read without end); then at most ``limit + 1`` bytes are read.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {p} is a folder, not a file") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {p}: {(e.strerror or str(e)).lower()}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file")
            raise UserError(f"{what} {p} is {kind}, not a regular file")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise UserError(f"cannot read {what} {p}: {(e.strerror or str(e)).lower()}") from None
    if len(data) > limit:
        raise UserError(f"{what} {p} is larger than {limit >> 20} MiB: not one of ours")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not UTF-8 text") from None


def read_json(path: str | os.PathLike[str], what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """JSON from a regular file (:func:`read_regular_text`); invalid or absurdly nested JSON is one line."""
    text = read_regular_text(path, what, limit)
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be one of ours") from None
    except ValueError as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None


# ------------------------------------------------------------------------------------------ manifests

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tensor(v: Any) -> str | None:
    """Why ``v`` is not a tensor description ``{"name": str, "shape": [int|str, ...], "dtype": str}``, or ``None``."""
    if not isinstance(v, dict):
        return "an object {name, shape, dtype}"
    if not isinstance(v.get("name"), str) or not TENSOR_NAME.fullmatch(v["name"]):
        return "an object whose name is a plain tensor name"
    shape = v.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) or isinstance(d, str) for d in shape):
        return "an object whose shape is a list of dimensions"
    if "dtype" in v and not isinstance(v["dtype"], str):
        return "an object whose dtype is a string"
    return None


def _scalar_map(v: Any) -> str | None:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        return "an object of names to values"
    if not all(x is None or isinstance(x, (str, int, float, bool, list)) for x in v.values()):
        return "an object of names to plain values"
    return None


def _checks() -> dict[str, Any]:
    """Field -> a check returning ``None`` or what the field should be."""
    def type_(*types, what):
        return lambda v: None if isinstance(v, types) and not isinstance(v, bool) else what

    def count(v):
        return None if _is_int(v) and v >= 0 else "a whole number >= 0"

    def positive(v):  # precision manifests copy the ONNX metadata, whose values are strings ("10")
        ok = (_is_int(v) and v >= 1) or (isinstance(v, str) and v.isascii() and v.isdigit() and int(v) >= 1)
        return None if ok else "a whole number >= 1"

    def three(v):  # [0.485, 0.456, 0.406], or the metadata's text of it (parsed where it is used)
        ok = isinstance(v, str) or (isinstance(v, list) and len(v) == 3 and all(map(_is_num, v)))
        return None if ok else "three numbers"

    def batch(v):
        return None if _is_int(v) and 1 <= v <= 1 << 20 else "a batch size from 1 to 1048576"

    return {
        "kind": type_(str, what="a string"),
        "arch": lambda v: None if isinstance(v, str) and SAFE_NAME.fullmatch(v) else "a plain architecture name",
        "precision": lambda v: None if v in PRECISION_NAMES else f"one of {', '.join(PRECISION_NAMES)}",
        "flavour": type_(str, what="a string"),
        "sha256": lambda v: None if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) else "64 hex digits",
        "engine_sha256": lambda v: None if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) else "64 hex digits",
        "bytes": count, "engine_bytes": count,
        "num_classes": positive, "image_size": positive,
        "min_batch": batch, "opt_batch": batch, "max_batch": batch,
        "onnx_fixed_batch": lambda v: None if v is None else batch(v),
        "input": _tensor, "output": _tensor,
        "outputs": lambda v: (None if isinstance(v, list) and v and all(_tensor(o) is None for o in v)
                              else "a non-empty list of tensor objects"),
        "source_metadata": _scalar_map,
        "mean": three, "std": three,
        "target": lambda v: None if v is None or isinstance(v, dict) else "an object",
        "dla_core": lambda v: None if v is None or _is_int(v) else "a whole number",
    }


FIELD_CHECKS = _checks()
REQUIRED = {"engine": ("flavour", "precision", "engine_bytes", "engine_sha256", "min_batch", "opt_batch", "max_batch",
                       "input", "outputs")}


def check_manifest(data: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """``data`` if it is a manifest whose fields have the types readers rely on (and an engine's has the ones
    it needs), else one :class:`UserError` naming the first wrong field and what it should be."""
    if not isinstance(data, dict):
        raise UserError(f"manifest {path} is not a JSON object")
    fix = "re-make the artifact (or restore the manifest)"
    for key in REQUIRED.get(data.get("kind"), ()):
        if key not in data:
            raise UserError(f"manifest {path} lacks {key!r}, which a {data['kind']} manifest records: {fix}")
    for key, check in FIELD_CHECKS.items():
        if key in data:
            want = check(data[key])
            if want is not None:
                raise UserError(f"manifest {path}: {key!r} is {json.dumps(data[key])[:80]}, not {want}: {fix}")
    if data.get("kind") == "engine":
        mn, opt, mx = data["min_batch"], data["opt_batch"], data["max_batch"]
        if not mn <= opt <= mx:
            raise UserError(f"manifest {path}: batch profile {mn}/{opt}/{mx} is not min <= opt <= max: {fix}")
    meta = data.get("source_metadata") or {}
    for key in ("arch", "precision"):
        if meta.get(key) not in (None, "") and FIELD_CHECKS[key](meta[key]) is not None:
            raise UserError(f"manifest {path}: source_metadata {key!r} is {json.dumps(meta[key])[:80]}, "
                            f"not {FIELD_CHECKS[key](meta[key])}: {fix}")
    return data


__all__ = ["FIELD_CHECKS", "MAX_JSON_BYTES", "PRECISION_NAMES", "REQUIRED", "SAFE_NAME", "TENSOR_NAME", "check_manifest",
           "read_json", "read_regular_text", "safe_name", "tensor_name"]
