"""Where every artifact lives, how it is written, and the manifest beside it.

Every stage of the pipeline (export, precision conversion, engine build, packaging) takes
its paths from :func:`artifact_path` and writes through :func:`atomic_write_bytes` or
:func:`atomic_path`, so an interrupted step never leaves a half-written file where a later
step would read it. :func:`verify` is the one check that a file is the one its manifest
describes. Torch-free and onnx-free: the edge bundle vendors this module.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError
from .schema import check_manifest, read_json, safe_name

DEFAULT_ROOT = Path("engines")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MANIFEST_SUFFIX = ".json"


class Precision(str, Enum):
    """A precision the toolkit makes artifacts in, parsed once where a user names it (:meth:`parse`).

    A ``str``: it compares, hashes, formats and serialises as its value (``Precision.FP16 == "fp16"``,
    ``f"{Precision.INT8}"`` is ``"int8"``, JSON writes ``"int8"``), so manifests and messages read
    as before; the functions past the CLI/API boundary take it and check it no more.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def parse(cls, precision: str) -> Precision:
        """``" FP16 "`` -> ``Precision.FP16``; anything that is not one of :data:`PRECISIONS` is a :class:`UserError`."""
        if isinstance(precision, cls):
            return precision
        p = str(precision).strip().lower()
        if p not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        return cls(p)


def name_from_file(path: str | os.PathLike[str]) -> str:
    """A plain name for a model known only by its file (``my net$(x).onnx`` -> ``my_net_x_``)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).name.split(".")[0]).lstrip("-")[:128]
    return stem if stem.strip("_") else "model"


def model_dir(arch: str, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """``engines/resnet50`` for arch ``resnet50`` (a plain name: never a path that leaves ``root``)."""
    return Path(root) / safe_name(arch, "architecture")


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
    precision = Precision.parse(precision)
    name = f"{arch}.{precision}.onnx" if kind == "onnx" else f"{arch}.{precision}.{kind}.engine"
    return model_dir(arch, root) / name


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """The manifest sits beside its artifact: ``resnet50.fp32.onnx`` -> ``resnet50.fp32.onnx.json``."""
    p = Path(artifact)
    return p.with_name(p.name + MANIFEST_SUFFIX)


# Folders this process created for its outputs, newest last: a command that fails removes the ones
# it left empty (cleanup_created_dirs), so a failed export leaves no empty <out>/<arch>/ behind.
_CREATED: list[Path] = []


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) or raise a one-line :class:`UserError`."""
    p = Path(path)
    missing = [q for q in [p, *p.parents] if not q.exists()]
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {p}: {os_reason(e)}") from None
    _CREATED.extend(reversed(missing))
    if not os.access(p, os.W_OK):
        raise UserError(f"output folder {p} is not writable")
    return p


def cleanup_created_dirs() -> None:
    """Remove the folders this process created that are still empty (after a failed command)."""
    while _CREATED:
        with contextlib.suppress(OSError):
            _CREATED.pop().rmdir()  # only if empty


def os_reason(e: OSError) -> str:
    """``no space left on device``, ``read-only file system``, ``permission denied``, ... from an OSError."""
    known = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "file name too long"}
    return known.get(e.errno, (e.strerror or str(e) or type(e).__name__).lower())


def disk_is_full(path: str | os.PathLike[str], margin: int = 8 << 20) -> bool:
    """Whether the filesystem of ``path`` has (almost) no room left: libraries that fail there do not all say ENOSPC."""
    try:
        return shutil.disk_usage(path).free < margin
    except OSError:
        return False


def write_error(path: str | os.PathLike[str], e: OSError) -> UserError:
    """The one line for an OSError while writing ``path``."""
    return UserError(f"cannot write {path}: {os_reason(e)}")


# Temporary files and folders of ours: ``.<final name>.<pid>.<token>.tmp`` (files), ``...work``
# (ModelOpt's working folders) and ``...old`` (the previous artifact, kept while its replacement's
# manifest is written): a writer killed without cleanup (SIGKILL, power) leaves them, and the next
# write into the same folder removes those whose process is gone.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.(tmp|work|old)\Z")


def temp_name(final: Path, suffix: str = "tmp") -> Path:
    return final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}"


def fresh_temporary(final: Path, suffix: str = "tmp") -> Path:
    """A new temporary name of ours beside ``final``, its folder made writable and swept of stale ones."""
    ensure_writable_dir(final.parent)
    sweep_stale_temporaries(final.parent)
    return temp_name(final, suffix)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove our temporaries in ``folder`` whose writing process no longer runs; return what went."""
    removed = []
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            m = _TEMP.match(p.name)
            if m and not _alive(int(m["pid"])):
                with contextlib.suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                    removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it onto ``final`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``final``
    is left as it was; an OSError (a full disk, a read-only folder) becomes one :class:`UserError`
    naming ``final`` and the reason. ``before_replace`` runs just before the rename (to drop the old
    manifest, so that a crash never leaves a new artifact beside the old one's manifest).
    """
    final = Path(final)
    tmp_path = fresh_temporary(final)
    try:
        tmp_path.touch()
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644 & ~_umask())  # artifacts are shared like any file
        if before_replace is not None:
            before_replace()
        os.replace(tmp_path, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise write_error(final, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def work_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A private folder beside ``final`` (same filesystem, so results can be renamed), removed whatever happens."""
    final = Path(final)
    work = fresh_temporary(final, "work")
    try:
        work.mkdir()
        yield work
    except OSError as e:
        raise write_error(final, e) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


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


def drop_manifest(artifact: str | os.PathLike[str]) -> None:
    """Remove the manifest beside ``artifact``."""
    with contextlib.suppress(FileNotFoundError):
        manifest_path(artifact).unlink()


# An artifact and its manifest are two files, so no single rename replaces both. The order that keeps
# them from ever disagreeing: keep the previous pair aside (a hard link to the old file and the old
# manifest's text), remove the old manifest, rename the new file into place, write its manifest
# (publish_manifest). Stopped in between, abandon() puts the previous pair back; killed outright, the
# folder holds the new file without a manifest, which readers refuse, and a stale ``.old`` link that the
# next write removes.
_REPLACED: dict[Path, tuple[Path | None, str | None]] = {}


@contextlib.contextmanager
def replacing(final: str | os.PathLike[str]) -> Iterator[Path]:
    """:func:`atomic_path` for an artifact that gets a manifest: call :func:`publish_manifest` next."""
    final = Path(final)

    def keep_previous() -> None:
        backup, text = None, None
        if final.is_file() and manifest_path(final).is_file():
            with contextlib.suppress(OSError):
                text = manifest_path(final).read_text(encoding="utf-8")
                backup = temp_name(final, "old")
                os.link(final, backup)
        _REPLACED[final] = (backup, text) if backup is not None and backup.exists() else (None, None)
        drop_manifest(final)

    with atomic_path(final, before_replace=keep_previous) as tmp:
        yield tmp


def abandon(artifact: str | os.PathLike[str]) -> None:
    """A replacement that did not finish (its manifest not written): put the previous artifact and
    manifest back, or, if there was none, remove the new file. Once only: after that, or for a file that
    :func:`replacing` did not put in place, it does nothing."""
    artifact = Path(artifact)
    if artifact not in _REPLACED:
        return
    backup, text = _REPLACED.pop(artifact)
    drop_manifest(artifact)
    with contextlib.suppress(OSError):
        if backup is None:
            artifact.unlink()
            return
        os.replace(backup, artifact)
        atomic_write_text(manifest_path(artifact), text or "")


def write_manifest(artifact: str | os.PathLike[str], facts: dict[str, Any]) -> Path:
    """Write the JSON manifest beside ``artifact`` (atomically) and return its path."""
    path = manifest_path(artifact)
    atomic_write_text(path, json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n")
    return path


def publish_manifest(artifact: str | os.PathLike[str], facts: dict[str, Any]) -> Path:
    """Write the manifest of an artifact just renamed into place by :func:`replacing`.

    If that fails or is interrupted, the previous artifact and manifest come back (:func:`abandon`):
    a write that did not finish never leaves a new artifact without its manifest.
    """
    try:
        path = write_manifest(artifact, facts)
    except BaseException:
        abandon(artifact)
        raise
    backup, _ = _REPLACED.pop(Path(artifact), (None, None))
    if backup is not None:
        with contextlib.suppress(OSError):
            backup.unlink()
    return path


def read_manifest(artifact: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the manifest beside ``artifact``; a missing or corrupt one is a :class:`UserError`."""
    path = manifest_path(artifact)
    if not os.path.lexists(path):
        raise UserError(f"no manifest beside {artifact} (expected {path})")
    # a regular file of bounded size, valid JSON of sane depth, fields of the types readers use (schema.py)
    return check_manifest(read_json(path, "manifest"), path)


def verified_manifest(artifact: str | os.PathLike[str], *, what: str = "artifact", fix: str = "make it again") -> dict[str, Any]:
    """The manifest beside ``artifact``, only if the file is the one it describes (else a :class:`UserError`)."""
    if not Path(artifact).is_file():
        raise UserError(f"{what} not found: {artifact}")
    manifest = read_manifest(artifact)
    verify(artifact, manifest, what=what, fix=fix)
    return manifest


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
