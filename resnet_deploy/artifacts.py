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
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError
from .schema import check_manifest, read_json, safe_name

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so only the age bound protects a live writer's temporaries
    fcntl = None  # type: ignore[assignment]

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
# (ModelOpt's working folders, the previous bundle during a swap) and ``...old`` (the previous artifact,
# kept while its replacement's manifest is written). A writer killed without cleanup (SIGKILL, power)
# leaves them, and the next write into the same folder removes them once their writer is gone.
# "Gone" is not judged by the pid alone (a writer in another pid namespace, a container sharing the
# volume, has a pid that means nothing here): each writer holds a lease, an flock on
# ``.<final name>.<pid>.<token>.lock`` beside its temporaries, for as long as they exist. The kernel
# drops the lock when the writer dies however it dies, and flock holds across pid namespaces on one
# host (and across NFS clients, where Linux maps it to POSIX locks). The lock file gets its name only
# once locked (it is made as ``...pending`` and renamed), so no sweeper ever sees it free while its
# writer lives. Where the filesystem cannot lock, an age bound (STALE_AFTER_S) is all that protects.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMP = re.compile(r"^\.(?P<stem>(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+)\.(?P<kind>tmp|work|old|lock|pending)\Z")
STALE_AFTER_S = 24 * 3600   # a temporary whose writer cannot be asked (no lock support) is removed after this
PENDING_AFTER_S = 60        # a lock file is ``pending`` for microseconds; one older than this was abandoned


class Lease:
    """A writer's claim on the temporaries it names with :meth:`path`: held (flocked) until :meth:`release`."""

    def __init__(self, final: str | os.PathLike[str]):
        final = Path(final)
        self.stem = f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}"
        self.folder = final.parent
        pending = self.path("pending")
        self.fd: int | None = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _try_lock(self.fd)
            os.replace(pending, self.path("lock"))
        except BaseException:
            self.release()
            with contextlib.suppress(OSError):
                pending.unlink()
            raise

    def path(self, suffix: str = "tmp") -> Path:
        """``<folder>/.<final name>.<pid>.<token>.<suffix>``: a temporary this lease covers."""
        return self.folder / f"{self.stem}.{suffix}"

    def release(self) -> None:
        """Drop the claim (after its temporaries are gone or renamed into place); twice is fine."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path("lock").unlink()
        os.close(self.fd)
        self.fd = None


def _try_lock(fd: int) -> bool:
    """flock ``fd`` exclusively; False where the filesystem (or platform) has no locks."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError:  # ENOLCK, EOPNOTSUPP: no locks here
        return False
    return True


def temp_name(final: Path, suffix: str = "tmp") -> Path:
    """A temporary name of ours beside ``final`` that no lease covers (removed by the sweep once our pid is gone)."""
    return final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}"


@contextlib.contextmanager
def leased_temporary(final: Path, suffix: str = "tmp") -> Iterator[Path]:
    """A new temporary name beside ``final``, its folder made writable and swept of stale temporaries,
    covered by a lease for the with-block (remove or rename the temporary before it ends)."""
    ensure_writable_dir(final.parent)
    sweep_stale_temporaries(final.parent)
    try:
        lease = Lease(final)
    except OSError as e:
        raise write_error(final, e) from None
    try:
        yield lease.path(suffix)
    finally:
        lease.release()


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


def _probe(lock: Path) -> tuple[str, int | None]:
    """``("held", None)``, ``("free", fd)`` (the lock now ours: close ``fd`` when done), ``("gone", None)``
    or ``("unknown", None)`` (no locks here, or the file cannot be opened)."""
    if fcntl is None:
        return "unknown", None
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return "gone", None
    except OSError:
        return "unknown", None
    try:
        locked = _try_lock(fd)
    except BlockingIOError:
        os.close(fd)
        return "held", None
    if not locked:
        os.close(fd)
        return "unknown", None
    return "free", fd


def _age(paths: list[Path], now: float) -> float:
    newest = 0.0
    for p in paths:
        with contextlib.suppress(OSError):
            st = p.lstat()
            newest = max(newest, st.st_mtime, st.st_ctime)
    return now - newest


def _remove(p: Path) -> bool:
    try:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    except OSError:
        return False
    return True


def _stale(stem: str, items: list[Path], folder: Path, now: float) -> tuple[bool, int | None]:
    """Whether the temporaries of one writer (``stem``) may go; the lock fd to close afterwards, if taken."""
    if any(_TEMP.match(p.name)["kind"] == "lock" for p in items):
        state, fd = _probe(folder / f".{stem}.lock")
        if state == "free":
            return True, fd
        return state == "unknown" and _age(items, now) > STALE_AFTER_S, None
    if all(_TEMP.match(p.name)["kind"] == "pending" for p in items):
        return _age(items, now) > PENDING_AFTER_S, None
    return True, None  # no lease (an unleased temp_name, or an older version's): the pid was all there was


def sweep_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove our temporaries in ``folder`` whose writer is gone; return what went.

    A writer is gone when its pid is not a live process here *and* its lease is not held (or, where
    the filesystem cannot lock, its temporaries are older than :data:`STALE_AFTER_S`).
    """
    folder, removed, now = Path(folder), [], time.time()
    writers: dict[str, list[Path]] = {}
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            m = _TEMP.match(p.name)
            if m and not _alive(int(m["pid"])):
                writers.setdefault(m["stem"], []).append(p)
    for stem, items in writers.items():
        stale, fd = _stale(stem, items, folder, now)
        try:
            if stale:  # the lock file last: while it exists (and we hold it) no one mistakes the rest for live
                for p in sorted(items, key=lambda q: q.name.endswith(".lock")):
                    if _remove(p):
                        removed.append(p)
        finally:
            if fd is not None:
                os.close(fd)
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
    with leased_temporary(final) as tmp_path:
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


def swap_folder(tmp: Path, final: Path, spare: Path) -> None:
    """Put the folder ``tmp`` at ``final`` in one rename; a previous ``final`` is renamed to ``spare`` first
    (put back if the second rename fails) and deleted after. ``spare`` is a temporary name of ours."""
    if not final.exists():
        os.replace(tmp, final)
        return
    os.replace(final, spare)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(spare, final)
        raise
    shutil.rmtree(spare, ignore_errors=True)


@contextlib.contextmanager
def work_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A private folder beside ``final`` (same filesystem, so results can be renamed), removed whatever happens."""
    final = Path(final)
    with leased_temporary(final, "work") as work:
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


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One read of a source file: its bytes and their sha256, so that a stage records the very bytes it uses.

    A stage that hashed a path and then let a library read the path again could compute from other
    bytes than it records (another command rewriting the source in between). It takes a snapshot
    once, records ``sha256``, and hands the library ``data`` or a private copy (:meth:`write`).
    """

    path: Path
    data: bytes
    sha256: str

    @classmethod
    def take(cls, path: str | os.PathLike[str], *, what: str = "source") -> Snapshot:
        """Read ``path`` once (a missing or unreadable file is a one-line :class:`UserError`)."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"{what} not found: {p}")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {p}: {os_reason(e)}") from None
        return cls(p, data, hashlib.sha256(data).hexdigest())

    @classmethod
    def pinned(cls, path: str | os.PathLike[str], sha256: str | None, *, what: str = "source") -> Snapshot:
        """:meth:`take`, refused unless its bytes are the ones a manifest just vouched for (``sha256``)."""
        snap = cls.take(path, what=what)
        if sha256 is not None and snap.sha256 != sha256:
            raise UserError(f"{snap.path} changed while this command was reading it (another command writing it?); "
                            "run it again once that one is done")
        return snap

    def write(self, dest: str | os.PathLike[str]) -> Path:
        """A private copy of the bytes at ``dest`` (for a library that reads files, not bytes)."""
        dest = Path(dest)
        dest.write_bytes(self.data)
        return dest


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
_REPLACED: dict[Path, tuple[Path | None, str | None, Lease | None]] = {}


@contextlib.contextmanager
def replacing(final: str | os.PathLike[str]) -> Iterator[Path]:
    """:func:`atomic_path` for an artifact that gets a manifest: call :func:`publish_manifest` next."""
    final = Path(final)

    def keep_previous() -> None:
        backup, text, lease = None, None, None
        if final.is_file() and manifest_path(final).is_file():
            with contextlib.suppress(OSError):
                text = manifest_path(final).read_text(encoding="utf-8")
                lease = Lease(final)  # the link lives until the manifest is published: under a lease of its own
                backup = lease.path("old")
                os.link(final, backup)
        if backup is None or not backup.exists():
            if lease is not None:
                lease.release()
            backup, text, lease = None, None, None
        _REPLACED[final] = (backup, text, lease)
        drop_manifest(final)

    with atomic_path(final, before_replace=keep_previous) as tmp:
        yield tmp


def _release(lease: Lease | None) -> None:
    if lease is not None:
        lease.release()


def abandon(artifact: str | os.PathLike[str]) -> None:
    """A replacement that did not finish (its manifest not written): put the previous artifact and
    manifest back, or, if there was none, remove the new file. Once only: after that, or for a file that
    :func:`replacing` did not put in place, it does nothing."""
    artifact = Path(artifact)
    if artifact not in _REPLACED:
        return
    backup, text, lease = _REPLACED.pop(artifact)
    drop_manifest(artifact)
    try:
        with contextlib.suppress(OSError):
            if backup is None:
                artifact.unlink()
                return
            os.replace(backup, artifact)
            atomic_write_text(manifest_path(artifact), text or "")
    finally:
        _release(lease)


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
    backup, _, lease = _REPLACED.pop(Path(artifact), (None, None, None))
    if backup is not None:
        with contextlib.suppress(OSError):
            backup.unlink()
    _release(lease)
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


def verify(path: str | os.PathLike[str] | Snapshot, manifest: dict[str, Any], *, what: str = "artifact",
           fix: str = "make it again") -> None:
    """Raise a one-line :class:`UserError` unless ``path`` is the file ``manifest`` describes.

    Engine manifests record ``engine_bytes`` / ``engine_sha256``, the others ``bytes`` /
    ``sha256``; the size is compared first (cheap, catches truncation), then the digest. A manifest
    without them (or with values of the wrong type) is refused: it vouches for nothing. ``path`` may
    be a :class:`Snapshot` (the bytes already read are checked, not the file again).
    """
    snap = path if isinstance(path, Snapshot) else None
    p = snap.path if snap is not None else Path(path)
    size_key, sha_key = ("engine_bytes", "engine_sha256") if manifest.get("kind") == "engine" else ("bytes", "sha256")
    want, sha = manifest.get(size_key), manifest.get(sha_key)
    # a manifest without its integrity fields proves nothing about the file: treated as no manifest
    if not isinstance(want, int) or isinstance(want, bool) or not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        missing = ", ".join(k for k, ok in ((size_key, isinstance(want, int) and not isinstance(want, bool)),
                                            (sha_key, isinstance(sha, str) and bool(_SHA256.fullmatch(sha)))) if not ok)
        raise UserError(f"the manifest of {what} {p} records no valid {missing}: it cannot vouch for the file, {fix}")
    size = len(snap.data) if snap is not None else p.stat().st_size
    if size != want:
        raise UserError(f"{what} {p} is {size} bytes but its manifest says {want}: truncated or replaced, {fix}")
    if (snap.sha256 if snap is not None else sha256_file(p)) != sha:
        raise UserError(f"{what} {p} does not match its manifest (sha256 differs): corrupted or replaced, {fix}")
