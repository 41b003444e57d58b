"""The TensorRT names the project uses, checked against NVIDIA's real Python bindings.

No TensorRT runs here, but PyPI's ``tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings`` wheels
(about 1.3 MB each) hold the compiled pybind11 module: every class, method, property and enum value
it binds is a NUL-terminated string in its ``.rodata`` section. The wheels are downloaded once
(pinned by version and sha256) into ``~/.cache/resnet-deploy/trt-bindings`` (or
``$RESNET_DEPLOY_CACHE``) and read without importing them. TensorRT-RTX is the installed
``tensorrt_rtx``, introspected.

Two directions, so that neither the table nor the code can drift:

* every name in :data:`resnet_deploy._native.trt_api.TRT_NAMES` exists in each version the code
  runs it on, or the code reaches it only through ``getattr`` / ``hasattr``;
* every TensorRT attribute in the modules that touch TensorRT is in the table.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from resnet_deploy._native.trt_api import DYNAMIC, TRT_NAMES

ROOT = Path(__file__).resolve().parents[2]

# (package, version, reach key, sha256 of the cp311 x86_64 wheel)
WHEELS = [
    ("tensorrt-cu12-bindings", "10.3.0", "trt10", "59ace22d7f2ca1e9dcde2cb0cb5916912cb3cd5a9d72dd7852be0160d9b3a0ee"),
    ("tensorrt-cu12-bindings", "10.16.1.11", "trt10", "150ef2b672487e29a8ea916353467c3e199994fb33589167e3641a928e243aa7"),
    ("tensorrt-cu13-bindings", "11.4.0.106", "trt11", "d072ac2a095e2be749fefc847adfb25d5ebe70303401df62ede8fe67a59f27fc"),
]

# The modules that call TensorRT, and the variable names that hold TensorRT objects in them.
TRT_MODULES = ["resnet_deploy/_native/trt.py", "resnet_deploy/engine/build.py", "resnet_deploy/engine/config.py",
               "resnet_deploy/engine/network.py", "resnet_deploy/engine/monitor.py", "resnet_deploy/engine/reuse.py",
               "resnet_deploy/runners/tensorrt.py", "resnet_deploy/runners/tensorrt_loader.py", "resnet_deploy/doctor.py",
               "resnet_deploy/deploy/templates/engine_manifest.py"]
RECEIVERS = {"trt", "tensorrt", "builder", "config", "network", "parser", "profile", "runtime", "engine", "eng",
             "context", "inspector", "layer", "inp", "rc", "cache", "flag_enum", "lt", "enum", "err", "sev", "tensor"}


# ------------------------------------------------------------------------------------------ reading bindings


def _rodata(data: bytes) -> bytes:
    """The ``.rodata`` section of a little-endian ELF64 shared object (the whole file otherwise)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return data
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    strtab = header(shstrndx)[1]
    for i in range(shnum):
        name, offset, size = header(i)
        if data[strtab + name:data.index(b"\0", strtab + name)] == b".rodata":
            return data[offset:offset + size]
    return data


_TAIL = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")


def bound_names(so: bytes) -> set[str]:
    """Identifiers the module binds: the identifier at the end of each string in ``.rodata``, and its
    tails (the linker stores "Builder" only inside "IBuilder\\0"). Docstrings end in prose, so names
    they merely mention (11.x docstrings still say ``BuilderFlag.FP16``) do not count."""
    out: set[str] = set()
    for chunk in _rodata(so).split(b"\0"):
        m = _TAIL.search(chunk)
        if m:
            word = m.group().decode("ascii")
            out.update(word[i:] for i in range(len(word) - 1) if not word[i].isdigit())
    return out


def wheel_names(path: Path) -> set[str]:
    """Names of a ``tensorrt_bindings`` wheel: the compiled module's and those its ``__init__.py`` defines."""
    names: set[str] = set()
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if member.startswith("tensorrt_bindings/") and member.endswith(".so"):
                names |= bound_names(z.read(member))
            elif member == "tensorrt_bindings/__init__.py":
                for node in ast.walk(ast.parse(z.read(member))):
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        names.add(node.name)
                    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        names.add(node.id)
                    elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                        names.add(node.attr)
    return names | {"__name__", "__init__", "__members__"}  # Python's own, on every module / class / enum


def fetch_wheel(package: str, version: str, sha256: str) -> Path:
    cache = Path(os.environ.get("RESNET_DEPLOY_CACHE", Path.home() / ".cache" / "resnet-deploy")) / "trt-bindings"
    for p in cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"):
        if hashlib.sha256(p.read_bytes()).hexdigest() == sha256:
            return p
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
               "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
               "-d", tmp, f"{package}=={version}"]
        env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if r.returncode != 0:  # a local pip configuration (a mirror without these wheels): ask PyPI itself
            r = subprocess.run([*cmd[:3], "--isolated", *cmd[3:]], capture_output=True, text=True, env=env, timeout=300)
        got = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or len(got) != 1:
            pytest.skip(f"cannot download {package}=={version} from PyPI: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        digest = hashlib.sha256(got[0].read_bytes()).hexdigest()
        assert digest == sha256, f"{got[0].name} has sha256 {digest}, not the pinned {sha256}"
        final = cache / got[0].name
        shutil.move(str(got[0]), final)
        return final


def rtx_names() -> set[str]:
    rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    names = set(dir(rtx))
    for attr in dir(rtx):
        obj = getattr(rtx, attr)
        if isinstance(obj, type):
            names |= set(dir(obj))
            names |= set(getattr(obj, "__members__", {}))
    return names


# ------------------------------------------------------------------------------------------ reading our code


def _receiver(node: ast.AST) -> str | None:
    """The variable an attribute chain starts from: ``trt.BuilderFlag.FP16`` -> trt, ``self._engine.x`` -> engine."""
    while True:
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return node.attr.lstrip("_")
            if node.attr == "__members__":
                return None  # a plain dict from here on
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return node.id if isinstance(node, ast.Name) else None


def used_names(sources: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(plain, guarded)``: TensorRT attribute names used directly, and through getattr/hasattr."""
    plain: dict[str, set[str]] = {}
    guarded: dict[str, set[str]] = {}
    for where, text in sources.items():
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.Attribute) and not (isinstance(n.value, ast.Name) and n.value.id == "self"):
                if _receiver(n.value) in RECEIVERS:
                    plain.setdefault(n.attr, set()).add(where)
            elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")
                  and len(n.args) >= 2 and isinstance(n.args[1], ast.Constant) and _receiver(n.args[0]) in RECEIVERS):
                guarded.setdefault(n.args[1].value, set()).add(where)
    return plain, guarded


def project_names():
    return used_names({rel: (ROOT / rel).read_text() for rel in TRT_MODULES})


# ------------------------------------------------------------------------------------------ the checks


@pytest.fixture(scope="module", params=[w[:3] for w in WHEELS] + [("tensorrt_rtx", "installed", "rtx")],
                ids=[f"{w[0].split('-')[1]}-{w[1]}" for w in WHEELS] + ["tensorrt_rtx"])
def bindings(request):
    package, version, reach = request.param
    if reach == "rtx":
        return reach, version, rtx_names()
    sha = next(w[3] for w in WHEELS if w[:2] == (package, version))
    return reach, version, wheel_names(fetch_wheel(package, version, sha))


def test_every_listed_name_exists_where_the_code_reaches_it(bindings):
    reach, version, names = bindings
    plain, guarded = project_names()
    missing, tolerated = [], []
    for name, where in {**TRT_NAMES, **DYNAMIC}.items():
        if reach in where and name not in names:
            (tolerated if name in guarded or name in DYNAMIC else missing).append(name)
    assert not missing, (f"TensorRT {version} ({reach}) has no {', '.join(sorted(missing))}: the code uses "
                         "them unguarded there; guard them (getattr/hasattr) or correct their reach in trt_api.py")
    if tolerated:
        print(f"{reach} {version}: absent but reached only through getattr/hasattr: {', '.join(sorted(tolerated))}")


def test_every_tensorrt_name_the_code_uses_is_in_the_table():
    plain, guarded = project_names()
    used = set(plain) | set(guarded)
    unlisted = sorted(used - set(TRT_NAMES) - set(DYNAMIC))
    assert not unlisted, f"TensorRT names used but missing from resnet_deploy/_native/trt_api.py: {unlisted}"
    stale = sorted(set(TRT_NAMES) - used)
    assert not stale, f"names in trt_api.py that no module uses any more: {stale}"


def test_the_checks_can_fail():
    """The name reader rejects what a module does not bind, and the code reader sees a new call."""
    so = b"\x00IBuilder\x00create_network\x00Returns ``BuilderFlag.FP16`` if set.\x00"
    names = bound_names(so)
    assert {"Builder", "IBuilder", "create_network"} <= names and "FP16" not in names and "set" not in names
    plain, guarded = used_names({"x.py": "def f(trt, config):\n    config.set_fancy(trt.Fancy.A)\n"
                                         "    getattr(trt.BuilderFlag, 'NEW', None)\n"})
    assert {"set_fancy", "Fancy", "A", "BuilderFlag"} <= set(plain) and set(guarded) == {"NEW"}


def test_version_facts_the_code_relies_on(bindings):
    """What reading the bindings found, kept true: weak typing is gone in 11 (so the legacy flags
    must stay behind getattr); version-compatible builds, the host-code switch for their embedded
    lean runtime, and the strongly typed flag exist on every TensorRT."""
    reach, version, names = bindings
    if reach == "trt11":
        assert "FP16" not in names and "OBEY_PRECISION_CONSTRAINTS" not in names
    if reach in ("trt10", "trt11"):
        assert {"VERSION_COMPATIBLE", "engine_host_code_allowed", "STRONGLY_TYPED"} <= names
