"""What both deployment targets share: staging a folder and swapping it in whole, ONNX facts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..artifacts import Snapshot, atomic_write_text, leased_temporary, name_from_file, swap_folder, write_error
from ..errors import UserError
from ..onnx_meta import detect_precision, graph_io, load_onnx, load_onnx_bytes, opset_of, read_metadata
from ..preprocess import recipe_from_metadata
from ..schema import tensor_name

TEMPLATES = Path(__file__).resolve().parent / "templates"


def check_sources(final: Path, sources: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse an output folder that is, holds or lies inside what the command reads (``sources``: the
    artifacts folder, the ``--onnx`` or ``--engine-file`` given): no command replaces what it reads from."""
    out = final.expanduser().resolve()
    for source in sources:
        src = Path(source).expanduser().resolve()
        if out == src or out in src.parents or (src.is_dir() and src in out.parents):
            where = "is" if out == src else ("holds" if out in src.parents else "lies inside")
            raise UserError(f"refusing to write {final}: it {where} {source}, which this command reads from; "
                            "choose an --out outside it")


def check_output_folder(final: Path, force: bool) -> None:
    """Refuse a file, a non-empty folder (unless ``force``), or a folder that holds the caller."""
    if final.exists() and not final.is_dir():
        raise UserError(f"{final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()):
        if not force:
            raise UserError(f"output folder {final} exists and is not empty; choose another --out or pass --force to replace it")
        resolved, cwd = final.resolve(), Path.cwd().resolve()
        if resolved == Path(resolved.anchor) or resolved == Path.home().resolve() or resolved == cwd or resolved in cwd.parents:
            raise UserError(f"refusing to replace {final}: it is the root, your home or the current folder (or holds it)")


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; on success it becomes ``final`` in one rename.

    On any error (Ctrl-C included) the temporary folder is removed and ``final`` is untouched.
    With ``force`` an existing ``final`` is replaced: it is renamed away, the new folder renamed
    in, and only then the old one deleted (if the swap fails, the old one is put back).
    """
    final = Path(final)
    check_output_folder(final, force)
    with leased_temporary(final) as tmp:
        try:
            tmp.mkdir(mode=0o700)
            yield tmp
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o755 & ~mask)  # mkdtemp makes 0700
            check_output_folder(final, force)  # still true after the (possibly long) work?
            swap_folder(tmp, final, tmp.with_suffix(".work"))  # the old folder: under the same lease until deleted
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(final, e) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def render(template: str, values: dict[str, Any]) -> str:
    """Fill ``@@KEY@@`` placeholders in a template file; every placeholder must be known."""
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    if "@@" in text:
        left = text[text.index("@@"):][:40]
        raise RuntimeError(f"template {template} has an unfilled placeholder near {left!r}")
    return text


def onnx_facts(source: str | os.PathLike[str] | Snapshot) -> dict[str, Any]:
    """Input/output names, shapes and types, metadata and precision of a classifier ONNX (a file, or a
    :class:`Snapshot`'s bytes: then the facts describe exactly the bytes that will be copied)."""
    if isinstance(source, Snapshot):
        path, model = source.path, load_onnx_bytes(source.data, source.path)
    else:
        path = Path(source)
        model = load_onnx(path, load_external_data=False)
    graph = model.graph
    inputs, outputs = graph_io(model)
    if len(inputs) != 1 or len(outputs) < 1:
        raise UserError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image input and logits")
    external = [i.name for i in graph.initializer if i.data_location == 1]  # TensorProto.EXTERNAL
    if external:
        raise UserError(f"{path} keeps its weights in external files; save it as a single file first")
    inp, out = inputs[0], outputs[0]
    if len(inp["shape"]) != 4 or any(not isinstance(d, int) for d in inp["shape"][1:]):
        raise UserError(f"{path}: input {inp['name']!r} has shape {inp['shape']}; expected [N, 3, H, W] with only N dynamic")
    if len(out["shape"]) != 2 or not isinstance(out["shape"][1], int):
        raise UserError(f"{path}: output {out['name']!r} has shape {out['shape']}; expected [N, classes]")
    for t, role in ((inp, "input"), (out, "output")):  # they become script words and config strings
        tensor_name(t["name"], f"{path}: its {role} name")
    meta = read_metadata(model)  # checked: a plain arch, a known precision
    precision = meta.get("precision")
    if precision is None or precision == "fp32":
        try:
            precision = detect_precision(model)
        except Exception:  # noqa: BLE001 - detection is best effort; metadata wins
            precision = precision or "fp32"
    batch = inp["shape"][0]
    return {
        "arch": meta.get("arch") or name_from_file(path),
        "input": inp,
        "output": out,
        "num_classes": int(out["shape"][1]),
        "fixed_batch": batch if isinstance(batch, int) and batch > 0 else None,
        "precision": precision,
        "metadata": meta,
        "opset": opset_of(model),
        "nodes": len(graph.node),
    }


def recipe_dict(meta: dict[str, str]) -> dict[str, Any]:
    return recipe_from_metadata(meta).to_dict()


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
