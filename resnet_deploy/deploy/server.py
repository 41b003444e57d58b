"""A local NVIDIA Triton Inference Server on a model repository: found, started, waited for, stopped.

:func:`find_server` looks for a server in this order: the path given (a ``tritonserver`` binary,
an install folder with ``bin/tritonserver``, or a Python environment that holds PyTriton),
``$RESNET_DEPLOY_TRITONSERVER`` (the same kinds of path), ``tritonserver`` on ``PATH``,
``/opt/tritonserver`` (NVIDIA's containers), and PyTriton's bundled server in this interpreter
(``pip install nvidia-pytriton``: tritonserver with the python backend only).

PyTriton's server needs what PyTriton itself sets up (measured: without it a python model's load
hangs for 120 s or fails): the python backend's stub for the Python version that runs it, copied
beside ``libtriton_python.so``; the wheel's bundled libraries (``nvidia_pytriton.libs``) and that
Python's libpython folder first on ``LD_LIBRARY_PATH``; and that environment's ``bin`` first on
``PATH``, so the stub's Python models import that environment's packages (PyTriton pins numpy<2:
with numpy 2 the 2.51 stub returns empty BYTES outputs).

:class:`TritonServer` binds 127.0.0.1 unless told otherwise, starts with ``--exit-on-error=false``
(one failed model does not stop the others) and waits until every model of the repository is
READY; a model that fails to load is reported by name with Triton's reason, and the server is
stopped. The server runs in its own session (a terminal's Ctrl-C reaches this process, which stops
it); ``stop()`` sends SIGTERM, then SIGKILL after a bounded wait; the server also gets SIGTERM if
this process dies (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, UserError

ENV_VAR = "RESNET_DEPLOY_TRITONSERVER"
OPT_ROOT = Path("/opt/tritonserver")
INSTALL = ("install a Triton server: NVIDIA's container (/opt/tritonserver), or `pip install nvidia-pytriton pillow` in a "
           "Python environment with numpy<2 and point --server (or $RESNET_DEPLOY_TRITONSERVER) at it")


@dataclass(frozen=True)
class ServerInstall:
    """A Triton server on this machine and what it needs to run."""

    binary: Path
    backends: Path                               # its backend directory
    source: str                                  # where it was found, for messages
    libs: tuple[Path, ...] = ()                  # prepended to LD_LIBRARY_PATH
    python_bin: Path | None = None               # prepended to PATH (the python backend's environment)
    stub: Path | None = None                     # a python backend stub to place beside libtriton_python.so

    def describe(self) -> dict[str, Any]:
        return {"binary": str(self.binary), "backends": str(self.backends), "source": self.source,
                "python_env": str(self.python_bin.parent) if self.python_bin else None}


def _pytriton_install(site: Path, python_bin: Path, libpython_dir: Path, version: str, source: str) -> ServerInstall:
    root = site / "pytriton" / "tritonserver"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not (root / "bin" / "tritonserver").is_file() or not stub.is_file():
        raise UserError(f"{site} holds PyTriton but not its server for Python {version} ({root})")
    return ServerInstall(binary=root / "bin" / "tritonserver", backends=root / "backends", source=source,
                         libs=(site / "nvidia_pytriton.libs", libpython_dir), python_bin=python_bin, stub=stub)


def _from_environment(env: Path, source: str) -> ServerInstall | None:
    """PyTriton in a Python environment (a venv folder): its server, stub and Python."""
    sites = sorted(env.glob("lib/python3.*/site-packages/pytriton"))
    if not sites:
        return None
    site = sites[-1].parent
    version = site.parent.name.removeprefix("python")
    home = None
    cfg = env / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                home = Path(value.strip())
    libdir = (home.parent / "lib") if home else env / "lib"
    return _pytriton_install(site, env / "bin", libdir, version, source)


def _from_path(path: Path, source: str) -> ServerInstall:
    path = path.expanduser()
    if path.is_file():
        root = path.parent.parent
        return ServerInstall(binary=path, backends=root / "backends", source=source)
    if (path / "bin" / "tritonserver").is_file() and not (path / "python_backend_stubs").is_dir():
        return ServerInstall(binary=path / "bin" / "tritonserver", backends=path / "backends", source=source)
    found = _from_environment(path, source)
    if found is not None:
        return found
    raise UserError(f"no Triton server at {path} ({source}): expected a tritonserver binary, a folder with "
                    "bin/tritonserver, or a Python environment that holds nvidia-pytriton")


def find_server(explicit: str | os.PathLike[str] | None = None) -> ServerInstall:
    """The Triton server to run (see the module docstring for the order), or :class:`BackendUnavailable`."""
    if explicit is not None:
        return _from_path(Path(explicit), "--server")
    if os.environ.get(ENV_VAR):
        return _from_path(Path(os.environ[ENV_VAR]), f"${ENV_VAR}")
    on_path = shutil.which("tritonserver")
    if on_path:
        return _from_path(Path(on_path).resolve(), "PATH")
    if (OPT_ROOT / "bin" / "tritonserver").is_file():
        return _from_path(OPT_ROOT, str(OPT_ROOT))
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        site = Path(spec.origin).parent.parent
        return _pytriton_install(site, Path(sys.executable).parent, Path(sysconfig.get_config_var("LIBDIR") or ""),
                                 f"{sys.version_info[0]}.{sys.version_info[1]}", "PyTriton in this Python")
    raise BackendUnavailable("triton", f"no Triton server found; {INSTALL}")


def _prepare_backends(install: ServerInstall, work: Path, extra: dict[str, Path]) -> Path:
    """A backend directory for this run: the install's backends (linked), PyTriton's python backend with its
    stub (copied: the stub must sit beside libtriton_python.so), and ``extra`` backend folders (copied)."""
    backends = work / "backends"
    backends.mkdir()
    if install.backends.is_dir():
        for entry in install.backends.iterdir():
            if entry.name == "python" and install.stub is not None:
                shutil.copytree(entry, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
                shutil.copy2(install.stub, backends / "python" / "triton_python_backend_stub")
            elif entry.name not in extra:
                (backends / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    for name, folder in extra.items():
        shutil.copytree(folder, backends / name, ignore=shutil.ignore_patterns("__pycache__"))
    return backends


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int | None = None   # None: metrics off


@dataclass
class TritonServer:
    """One ``tritonserver`` process on ``repository``; use it in a ``with`` block, or ``start()``/``stop()``."""

    repository: Path
    install: ServerInstall | None = None
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    extra_backends: dict[str, Path] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    log_path: Path | None = None          # the server's stdout/stderr (default: a file in its work folder)
    process: subprocess.Popen | None = None
    _work: Path | None = None

    @property
    def endpoints(self) -> dict[str, str]:
        out = {"http": f"http://{self.host}:{self.ports.http}", "grpc": f"grpc://{self.host}:{self.ports.grpc}"}
        if self.ports.metrics is not None:
            out["metrics"] = f"http://{self.host}:{self.ports.metrics}/metrics"
        return out

    def command(self, backends: Path) -> list[str]:
        p = self.ports
        cmd = [str(self.install.binary), "--model-repository", str(self.repository), "--backend-directory", str(backends),
               "--http-address", self.host, "--grpc-address", self.host, "--http-port", str(p.http),
               "--grpc-port", str(p.grpc), "--exit-on-error=false", "--strict-model-config=true", "--log-verbose=0"]
        if p.metrics is None:
            cmd += ["--allow-metrics=false", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false"]
        else:
            cmd += ["--metrics-address", self.host, "--metrics-port", str(p.metrics)]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        install = self.install
        if install.libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([*(str(p) for p in install.libs), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        if install.python_bin is not None:
            env["PATH"] = os.pathsep.join([str(install.python_bin), env.get("PATH", "")])
            env.pop("PYTHONPATH", None)  # the server's Python models import the server environment's packages
            env.pop("PYTHONHOME", None)
        return env

    def start(self) -> "TritonServer":
        self.repository = Path(self.repository)
        if not self.repository.is_dir():
            raise UserError(f"model repository not found: {self.repository}")
        self.install = self.install or find_server()
        self._work = Path(tempfile.mkdtemp(prefix="resnet-deploy-triton-"))
        try:
            backends = _prepare_backends(self.install, self._work, {k: Path(v) for k, v in self.extra_backends.items()})
            self.log_path = Path(self.log_path or self._work / "tritonserver.log")
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(backends), env=self.environment(), stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    # ------------------------------------------------------------------ readiness
    def _get(self, path: str, data: bytes | None = None, timeout: float = 2.0) -> Any:
        req = urllib.request.Request(f"http://{self.host}:{self.ports.http}{path}", data=data, method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else {}

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").splitlines()
        except (OSError, TypeError):
            return ""
        errors = [line for line in text if line.startswith("E") or "error" in line.lower()]
        return " | ".join((errors or text)[-lines:])

    def models(self) -> list[dict[str, Any]]:
        """Triton's repository index: ``[{"name", "version", "state", "reason"}]``."""
        return self._get("/v2/repository/index", data=b"{}")

    def wait_ready(self) -> list[dict[str, Any]]:
        """Wait until every model in the repository is READY; one line naming a model that failed, a server that
        exited, or the timeout."""
        deadline = time.monotonic() + self.ready_timeout_s
        index: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"tritonserver exited with status {self.process.returncode} before it was ready: {self.log_tail()}")
            try:
                index = self.models()
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.2)
                continue
            failed = [m for m in index if m.get("state") == "UNAVAILABLE"]
            if failed:
                raise UserError("Triton could not load " + "; ".join(f"{m['name']}: {m.get('reason', '?')}" for m in failed))
            if index and all(m.get("state") == "READY" for m in index):
                return index
            if not index and self._ready():
                raise UserError(f"{self.repository} holds no model Triton can load (a folder per model with config.pbtxt)")
            time.sleep(0.2)
        waiting = [m["name"] for m in index if m.get("state") != "READY"]
        raise UserError(f"Triton was not ready within {self.ready_timeout_s:g} s"
                        + (f" (still loading: {', '.join(waiting)})" if waiting else "") + f"; log: {self.log_tail()}")

    def _ready(self) -> bool:
        try:
            urllib.request.urlopen(f"http://{self.host}:{self.ports.http}/v2/health/ready", timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            return False

    # ------------------------------------------------------------------ stopping
    def wait(self) -> int:
        """Block until the server exits (Ctrl-C / SIGTERM raise here; ``stop()`` then)."""
        return self.process.wait() if self.process is not None else 0

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; removes the work folder. Safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._work is not None:  # (its log goes with it: failures quote the log's last lines)
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ENV_VAR", "Ports", "ServerInstall", "TritonServer", "find_server"]
