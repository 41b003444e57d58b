"""Deployment: the Jetson / edge bundle, the Triton model repository, `predict`, labels.

CPU only. Nothing here can execute a TensorRT engine (no TensorRT, no usable GPU); what runs an
engine is tested up to the point where TensorRT is needed, and the bundle's ``infer.py`` is run end
to end with an ONNX Runtime session standing in for the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import invoke, one_line

import resnet_deploy as rd
from resnet_deploy.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera")  # camera is grayscale

# A sitecustomize that makes `import torch` (and the toolkit itself) fail, as on a device without them.
BLOCKER = textwrap.dedent('''
    import sys
    BLOCKED = {"torch", "torchvision", "resnet_deploy", "onnx"} | set(filter(None, "%s".split(",")))
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None
    sys.meta_path.insert(0, _Block())
''')


def run_blocked(args, tmp_path, *, extra_blocked=("onnxruntime",), cwd=None, input=None):
    """Run ``python args...`` with torch, torchvision, onnx and the toolkit made unimportable."""
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER % ",".join(extra_blocked))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd or tmp_path, input=input, timeout=300)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def photos(work):
    """scikit-image's photographs as real files: JPEG, PNG and a grayscale PNG."""
    import skimage.data
    from PIL import Image

    paths = []
    for i, name in enumerate(PHOTOS):
        p = work / f"{name}.{'jpg' if i % 2 == 0 else 'png'}"
        Image.fromarray(getattr(skimage.data, name)()).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def checkpoint(work):
    """A known checkpoint: a create_model state_dict saved as .pth (seed 7, not the default)."""
    model = rd.create_model(18, seed=7)
    path = work / "resnet18-known.pth"
    torch.save(model.state_dict(), path)
    return path


def preprocess_files(paths) -> np.ndarray:
    """The toolkit's preprocessing of image files, as one float32 NCHW batch."""
    from resnet_deploy.preprocess import load_image, preprocess_image

    return np.stack([preprocess_image(load_image(p)) for p in paths])


@pytest.fixture(scope="module")
def reference(checkpoint, photos):
    """PyTorch FP32 logits of the checkpoint on the photographs (the toolkit's preprocessing)."""
    model = rd.create_model(18, weights=checkpoint)
    with torch.no_grad():
        return model(torch.from_numpy(preprocess_files(photos))).numpy()


@pytest.fixture(scope="module")
def onnx18(work, checkpoint):
    return Path(rd.export(18, weights=checkpoint, out_dir=work / "engines")["path"])


@pytest.fixture(scope="module")
def bundle(work, onnx18):
    from resnet_deploy.api import package

    out = work / "bundle"
    m = package(18, target="jetson", out=out, onnx=onnx18)
    return out, m


def top5(logits: np.ndarray) -> list[list[int]]:
    return [list(np.argsort(-row, kind="stable")[:5]) for row in logits]


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- labels

def test_imagenet_labels_are_the_1000_torchvision_classes():
    from resnet_deploy.labels import imagenet_labels

    names = imagenet_labels()
    assert len(names) == 1000 and len(set(names)) == 1000
    # spot checks against torchvision's _IMAGENET_CATEGORIES order
    assert names[0] == "tench" and names[1] == "goldfish" and names[281] == "tabby" and names[999] == "toilet tissue"


def test_label_file_problems_are_one_line_errors(tmp_path):
    from resnet_deploy.labels import load_labels

    (tmp_path / "ok.txt").write_text("cat\ndog\n\n")
    assert load_labels(tmp_path / "ok.txt", 2) == ["cat", "dog"]
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    for name, want in (("gap.txt", "blank line at line 2"), ("empty.txt", "is empty"), ("missing.txt", "not found")):
        with pytest.raises(UserError, match=want):
            load_labels(tmp_path / name, 2)
    with pytest.raises(UserError, match="has 2 names but the model has 3 classes"):
        load_labels(tmp_path / "ok.txt", 3)
    with pytest.raises(UserError, match="1000 names but the model has 10 classes"):
        load_labels(None, 10)


def test_top_k_and_softmax():
    from resnet_deploy.classify import infer_in_batches, top_k
    from resnet_deploy.classify import softmax as sm

    logits = np.array([[0.0, 2.0, 1.0, 2.0]], np.float32)
    rows = top_k(logits, ["a", "b", "c", "d"], 3)
    assert [r["label"] for r in rows[0]] == ["b", "d", "c"]  # tie broken by the lower index
    assert sum(sm(logits)[0]) == pytest.approx(1.0)
    with pytest.raises(UserError, match="NaN or Inf"):
        top_k(np.array([[0.0, np.nan]]), ["a", "b"])

    class Fixed:  # accepts exactly batch 4, like a fixed-batch ONNX
        def infer(self, x):
            assert len(x) == 4
            return x.reshape(4, -1)[:, :2] * 1.0

    batch = np.arange(10 * 2, dtype=np.float32).reshape(10, 2, 1, 1)
    out = infer_in_batches(Fixed(), batch, min_batch=4, max_batch=4)
    np.testing.assert_array_equal(out, batch.reshape(10, 2))


# --------------------------------------------------------------------------- predict

def test_predict_ort_agrees_with_pytorch_top5(onnx18, checkpoint, photos, reference):
    from resnet_deploy.api import predict

    r = predict(photos, 18, weights=checkpoint, backend="ort", artifact=onnx18, top=5)
    got = [[item["index"] for item in p["top"]] for p in r["predictions"]]
    assert got == top5(reference)
    probs = softmax(reference.astype(np.float64))
    for p, row in zip(r["predictions"], probs):
        assert [item["probability"] for item in p["top"]] == pytest.approx([row[i] for i in (item["index"] for item in p["top"])], abs=1e-5)
    from resnet_deploy.labels import imagenet_labels

    assert r["predictions"][0]["top"][0]["label"] == imagenet_labels()[top5(reference)[0][0]]
    assert len({tuple(g) for g in got}) > 1  # different photographs, different answers


def test_predict_torch_backend_and_custom_labels(checkpoint, photos, reference, tmp_path):
    from resnet_deploy.api import predict

    names = tmp_path / "names.txt"
    names.write_text("".join(f"class-{i}\n" for i in range(1000)))
    r = predict(photos[:2], 18, weights=checkpoint, backend="torch", labels=names, top=3)
    assert [[i["index"] for i in p["top"]] for p in r["predictions"]] == [t[:3] for t in top5(reference[:2])]
    assert r["predictions"][0]["top"][0]["label"] == f"class-{top5(reference)[0][0]}"


def test_predict_refuses_bad_input(onnx18, checkpoint, photos, tmp_path):
    from resnet_deploy.api import predict

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a JPEG")
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(UserError, match="cannot decode image"):
        predict([photos[0], bad], 18, weights=checkpoint, artifact=onnx18)
    with pytest.raises(UserError, match="2 names but the model has 1000 classes"):
        predict(photos[:1], 18, weights=checkpoint, artifact=onnx18, labels=short)
    with pytest.raises(UserError, match="other weights|random"):
        predict(photos[:1], 18, artifact=onnx18)  # made from the checkpoint, asked for seeded random weights
    with pytest.raises(UserError, match="holds resnet18, not resnet34"):
        predict(photos[:1], 34, weights=checkpoint, artifact=onnx18)


def test_predict_cli(onnx18, checkpoint, photos, tmp_path):
    from typer.testing import CliRunner

    from resnet_deploy.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(photos[0]), str(photos[1]), "--depth", "18", "--weights", str(checkpoint),
                              "--artifact", str(onnx18), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data["predictions"]) == 2 and len(data["predictions"][0]["top"]) == 5
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    res = runner.invoke(app, ["predict", str(bad), "--depth", "18", "--weights", str(checkpoint), "--artifact", str(onnx18)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "cannot decode image" in res.output


# --------------------------------------------------------------------------- Jetson bundle

def test_bundle_contents(bundle, onnx18):
    from resnet_deploy.artifacts import sha256_file
    from resnet_deploy.deploy.jetson import VENDORED

    out, m = bundle
    for rel in ("README.md", "manifest.json", "labels.txt", "build_engine.sh", "infer.py", "engine_manifest.py",
                "requirements.txt", "resnet18.fp32.onnx", "cpp/main.cpp", "cpp/CMakeLists.txt", "cpp/image_io.hpp",
                "resnet_deploy_edge/__init__.py", "resnet_deploy_edge/runners/__init__.py"):
        assert (out / rel).is_file(), rel
    for rel in VENDORED:  # verbatim copies of the toolkit's modules: one runner, not two
        assert (out / "resnet_deploy_edge" / rel).read_bytes() == (REPO / "resnet_deploy" / rel).read_bytes(), rel
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == sha256_file(onnx18) == sha256_file(out / "resnet18.fp32.onnx")
    assert manifest["preprocess"] == {"image_size": 224, "resize": 256, "mean": [0.485, 0.456, 0.406],
                                      "std": [0.229, 0.224, 0.225], "layout": "NCHW", "interpolation": "bilinear"}
    assert manifest["model"]["input"]["name"] == "input" and manifest["model"]["input"]["shape"][1:] == [3, 224, 224]
    assert manifest["model"]["output"]["name"] == "logits" and manifest["model"]["num_classes"] == 1000
    assert (manifest["engine"]["min_batch"], manifest["engine"]["opt_batch"], manifest["engine"]["max_batch"]) == (1, 8, 32)
    for rel, sha in manifest["files"].items():
        assert sha256_file(out / rel) == sha, rel
    assert len((out / "labels.txt").read_text().splitlines()) == 1000
    for rel in ("build_engine.sh", "infer.py"):
        assert os.stat(out / rel).st_mode & stat.S_IXUSR
    text = "".join(p.read_text() for p in out.rglob("*") if p.suffix in (".sh", ".py", ".md", ".cpp", ".hpp", ".txt"))
    assert "@@" not in text  # every template placeholder filled
    assert m["path"] == str(out)
    # the device builds its engine with trtexec: the vendored package carries the runner, not the builder
    edge = {p.relative_to(out / "resnet_deploy_edge").as_posix(): p.read_text() for p in (out / "resnet_deploy_edge").rglob("*.py")}
    assert not [rel for rel in edge if rel.startswith("engine")], sorted(edge)
    builder_calls = ("build_serialized_network", "create_builder_config", "OnnxParser", "create_network")
    assert not [(rel, c) for rel, src in edge.items() for c in builder_calls if c in src]


def test_build_engine_script_is_valid_bash(bundle):
    out, _ = bundle
    subprocess.run(["bash", "-n", str(out / "build_engine.sh")], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); bash -n passed")
    res = subprocess.run(["shellcheck", "-S", "style", str(out / "build_engine.sh")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def _stub_trtexec(tmp_path: Path, version: str = "10.3.0") -> tuple[Path, Path]:
    """A stand-in for trtexec: prints its banner and version as trtexec does, records its arguments,
    writes an engine file and, for a DLA build, logs one layer moved to the GPU and one DLA subgraph."""
    args = tmp_path / "trtexec.args"
    stub = tmp_path / "trtexec"
    major, minor, patch = (int(v) for v in version.split(".")[:3])
    stub.write_text(textwrap.dedent(f'''\
        #!/usr/bin/env bash
        echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{major * 10000 + minor * 100 + patch}] # trtexec $*"
        [[ "$1" == "--help" ]] && exit 0
        echo "[I] TensorRT version: {version}"
        printf '%s\\n' "$@" > "{args}"
        for a in "$@"; do case "$a" in --saveEngine=*) printf 'not-a-real-engine' > "${{a#--saveEngine=}}";; esac; done
        if printf '%s\\n' "$@" | grep -q -- --useDLACore; then
            echo "[W] [TRT] Layer '/fc/Gemm' (MATRIX_MULTIPLY): Unsupported on DLA. Switching this layer's device type to GPU."
            echo "[I] [TRT] [DlaLayer] {{ForeignNode[/conv1/Conv.../layer4/layer4.1/relu_1/Relu]}}"
            echo "[I] [TRT] [GpuLayer] MATRIX_MULTIPLY: /fc/Gemm"
        fi
        '''))
    stub.chmod(0o755)
    return stub, args


def test_build_engine_script_runs_trtexec_with_documented_flags(bundle, tmp_path):
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    stub, args = _stub_trtexec(tmp_path)
    res = subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), "--max-batch", "16"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    flags = args.read_text().split()
    engine = copy / "resnet18.fp32.trt.engine"
    assert f"--onnx={copy / 'resnet18.fp32.onnx'}" in flags and "--stronglyTyped" in flags
    assert f"--saveEngine={engine}.tmp" in flags and f"--timingCacheFile={copy / 'timing.cache'}" in flags
    assert {"--minShapes=input:1x3x224x224", "--optShapes=input:8x3x224x224", "--maxShapes=input:16x3x224x224"} <= set(flags)
    assert not any(f.startswith(("--fp16", "--int8", "--useDLACore")) for f in flags)
    # the manifest the runner reads: it matches the engine file and records the build
    from resnet_deploy.artifacts import read_manifest
    from resnet_deploy.runners.tensorrt import verify_engine_file

    m = read_manifest(engine)
    verify_engine_file(engine, m)
    assert (m["flavour"], m["builder_version"], m["min_batch"], m["max_batch"]) == ("trt", "10.3.0", 1, 16)
    assert not (copy / "resnet18.fp32.trt.engine.tmp").exists()


@pytest.mark.parametrize("argv, message", [
    (["--max-batch", "0"], "--max-batch must be a whole number >= 1"),
    (["--min-batch", "9", "--opt-batch", "4"], "min <= opt <= max"),
    (["--dla", "one"], "--dla must be a DLA core number"),
    (["--dla", "0"], "DLA runs FP16 or INT8 only"),
    (["--trtexec", "/nonexistent/trtexec"], "trtexec is not an executable file"),
    (["--bogus"], "unknown option '--bogus'"),
])
def test_build_engine_script_rejects_bad_input(bundle, tmp_path, argv, message):
    out, _ = bundle
    stub, args = _stub_trtexec(tmp_path)
    full = argv if "--trtexec" in argv else [*argv, "--trtexec", str(stub)]
    res = subprocess.run([str(out / "build_engine.sh"), *full], capture_output=True, text=True)
    assert res.returncode != 0 and message in res.stderr and not args.exists()
    assert not list(out.glob("*.engine*"))


def _as_precision(bundle_dir: Path, precision: str) -> None:
    """Make a copied fp32 bundle's script build as another precision (the flags depend only on it)."""
    script = bundle_dir / "build_engine.sh"
    script.write_text(script.read_text().replace('PRECISION="fp32"', f'PRECISION="{precision}"'))


@pytest.mark.parametrize("precision, flags", [("int8", ["--int8", "--fp16"]), ("fp16", ["--fp16"])])
def test_build_engine_script_dla_on_tensorrt_10_uses_precision_flags_and_one_static_batch(bundle, tmp_path, precision,
                                                                                          flags):
    """trtexec 10.x sets the FP16 builder flag for every DLA build, which a strongly typed network
    refuses: DLA builds pass the precision flags instead; DLA has no dynamic shapes: min = opt = max."""
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    _as_precision(copy, precision)
    stub, args = _stub_trtexec(tmp_path, "10.3.0")
    res = subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), "--dla", "0"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    got = args.read_text().split()
    assert "--stronglyTyped" not in got and [f for f in got if f in ("--int8", "--fp16")] == flags
    assert {"--useDLACore=0", "--allowGPUFallback", "--minShapes=input:1x3x224x224", "--optShapes=input:1x3x224x224",
            "--maxShapes=input:1x3x224x224"} <= set(got)
    from resnet_deploy.artifacts import read_manifest

    m = read_manifest(copy / "resnet18.fp32.trt.engine")
    assert (m["dla_core"], m["min_batch"], m["opt_batch"], m["max_batch"], m["strongly_typed"]) == (0, 1, 1, 1, False)
    assert m["dla_placement"]["fell_back_to_gpu"] == 1 and m["dla_placement"]["dla_subgraphs"] == 1
    assert m["dla_placement"]["mostly_gpu"] is False and m["dla_placement"]["onnx_nodes"] > 20
    # another static batch
    res = subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), "--dla", "1", "--batch", "4"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "--maxShapes=input:4x3x224x224" in args.read_text().split()


def test_build_engine_script_on_tensorrt_11_stays_strongly_typed_and_refuses_weak_typing(bundle, tmp_path):
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    _as_precision(copy, "fp16")
    stub, args = _stub_trtexec(tmp_path, "11.4.0")
    res = subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), "--dla", "0"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    got = args.read_text().split()
    assert "--stronglyTyped" in got and "--fp16" not in got and "--useDLACore=0" in got
    args.unlink()
    res = subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), "--weak-typing"], capture_output=True,
                         text=True)
    assert res.returncode == 1 and "trtexec 11.x has no --fp16/--int8" in res.stderr and not args.exists()


@pytest.mark.parametrize("argv, message", [
    (["--dla", "0", "--max-batch", "8"], "DLA has no dynamic shapes"),
    (["--batch", "4"], "--batch is the static batch of a DLA engine"),
    (["--dla", "0", "--batch", "0"], "--batch must be a whole number >= 1"),
])
def test_build_engine_script_refuses_dynamic_dla_profiles(bundle, tmp_path, argv, message):
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    _as_precision(copy, "int8")
    stub, args = _stub_trtexec(tmp_path)
    res = subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), *argv], capture_output=True, text=True)
    assert res.returncode == 1 and message in res.stderr and not args.exists(), res.stderr


def test_engine_manifest_version_prefers_the_module_then_the_package_then_trtexec(bundle, tmp_path, monkeypatch):
    """The runner compares this version: the 4-part one where it can be had (JetPack's libnvinfer10 package)."""
    out, _ = bundle
    sys.path.insert(0, str(out))
    try:
        import engine_manifest
    finally:
        sys.path.remove(str(out))
    fake_dpkg = tmp_path / "bin" / "dpkg-query"
    fake_dpkg.parent.mkdir()
    fake_dpkg.write_text('#!/usr/bin/env bash\n[[ "$*" == *libnvinfer10* ]] && echo -n "10.3.0.30-1+cuda12.5" || exit 1\n')
    fake_dpkg.chmod(0o755)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no Python module: `import tensorrt` fails
    monkeypatch.setenv("PATH", f"{fake_dpkg.parent}:{os.environ['PATH']}")
    assert engine_manifest.tensorrt_version("10.3.0") == ("10.3.0.30", "dpkg libnvinfer10")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert engine_manifest.tensorrt_version("10.3.0") == ("10.3.0", "trtexec log")


def test_build_engine_script_fails_clearly_without_the_model(bundle, tmp_path):
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    (copy / "resnet18.fp32.onnx").unlink()
    res = subprocess.run([str(copy / "build_engine.sh")], capture_output=True, text=True)
    assert res.returncode == 1 and "model not found" in res.stderr


def test_bundle_imports_without_torch(bundle, tmp_path):
    out, _ = bundle
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import infer, engine_manifest; "
            "import resnet_deploy_edge.runners.tensorrt, resnet_deploy_edge._native.cuda; "
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'resnet_deploy', 'onnx')); "
            "assert not bad, bad; print('ok')")
    res = run_blocked(["-c", code, out], tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    res = run_blocked(["-c", "import torch"], tmp_path)
    assert res.returncode != 0  # the blocker really blocks


def test_infer_without_engine_runtime_fails_in_one_line(bundle, photos, tmp_path):
    out, _ = bundle
    res = run_blocked([out / "infer.py", photos[0], "--engine", tmp_path / "missing.engine"], tmp_path)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: engine not found") and "Traceback" not in res.stderr
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"xx")
    res = run_blocked([out / "infer.py", bad], tmp_path)
    assert res.returncode == 2 and "cannot decode image" in res.stderr and "Traceback" not in res.stderr
    # an engine + manifest from build_engine.sh, but no TensorRT here: BackendUnavailable (exit 3)
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    stub, _ = _stub_trtexec(tmp_path)
    subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub)], check=True, capture_output=True)
    res = run_blocked([copy / "infer.py", photos[0]], tmp_path)
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - tensorrt missing, or its libraries do not load
        assert res.returncode == 3 and "tensorrt" in res.stderr and "Traceback" not in res.stderr, res.stderr
    else:
        assert res.returncode != 0  # the stub engine is not an engine


def test_bundle_preprocessing_equals_toolkit_on_photographs(bundle, photos, tmp_path):
    """infer.py (torch-free, vendored code, recipe read back from manifest.json) == resnet_deploy.preprocess."""
    out, _ = bundle
    npy = tmp_path / "batch.npy"
    res = run_blocked([out / "infer.py", *photos, "--save-input", npy], tmp_path)
    assert res.returncode == 0, res.stderr
    got = np.load(npy)
    want = preprocess_files(photos)
    assert got.shape == (len(photos), 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_bundle_infer_end_to_end_matches_pytorch(bundle, photos, reference, tmp_path):
    """infer.py's Classifier (preprocessing, batching, softmax, labels) with ONNX Runtime standing in for TensorRT."""
    pytest.importorskip("onnxruntime")
    out, _ = bundle
    code = textwrap.dedent('''
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import numpy as np, onnxruntime as ort
        from infer import Classifier
        class OrtAsEngine:  # what TensorRTRunner offers: infer(), its input spec's batch limits, close()
            class input_spec:
                min_batch, max_batch = 1, 2
            def __init__(self, path):
                self.s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            def infer(self, x):
                assert 1 <= len(x) <= 2
                return self.s.run(None, {"input": x})[0]
        with Classifier(runner=OrtAsEngine(sys.argv[2])) as clf:
            rows = clf.classify(sys.argv[3:], k=5)
        print(json.dumps(rows))
        assert "torch" not in sys.modules
    ''')
    res = run_blocked(["-c", code, out, out / "resnet18.fp32.onnx", *photos], tmp_path, extra_blocked=())
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [[r["index"] for r in row] for row in rows] == top5(reference)
    probs = softmax(reference.astype(np.float64))
    assert rows[0][0]["probability"] == pytest.approx(probs[0].max(), abs=1e-5)
    labels = (out / "labels.txt").read_text().splitlines()
    assert all(r["label"] == labels[r["index"]] for row in rows for r in row)


def test_cpp_input_loading_equals_python_preprocessing(bundle, photos, tmp_path):
    """The C++ example's PPM/.npy loading (image_io.hpp) gives the tensor infer.py computes."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) here")
    out, _ = bundle
    harness = tmp_path / "harness.cpp"
    harness.write_text(textwrap.dedent('''
        #include "image_io.hpp"
        #include <cstdio>
        int main(int, char** argv) {
            std::vector<float> v = bundle::loadInput(argv[1], 3, bundle::kImageSize, bundle::kImageSize);
            std::FILE* f = std::fopen(argv[2], "wb");
            std::fwrite(v.data(), sizeof(float), v.size(), f);
            std::fclose(f);
            return 0;
        }
    '''))
    exe = tmp_path / "harness"
    subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{out / 'cpp'}", str(harness), "-o", str(exe)],
                   check=True)
    for photo in (photos[0], photos[-1]):  # a colour JPEG and the grayscale PNG
        ppm, npy = tmp_path / "crop.ppm", tmp_path / "x.npy"
        res = run_blocked([out / "infer.py", photo, "--save-ppm", ppm, "--save-input", npy], tmp_path)
        assert res.returncode == 0, res.stderr
        want = np.load(npy)[0]
        for src in (ppm, npy):
            raw = tmp_path / "out.raw"
            subprocess.run([str(exe), str(src), str(raw)], check=True)
            got = np.fromfile(raw, np.float32).reshape(want.shape)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    res = subprocess.run([str(exe), str(photos[1]), str(tmp_path / "o.raw")], capture_output=True, text=True)
    assert res.returncode != 0  # a PNG is not accepted by the dependency-free loader


def _tensorrt_include() -> Path | None:
    for cand in (os.environ.get("TENSORRT_INCLUDE_DIR"), "/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu",
                 "/usr/local/tensorrt/include", "/usr/include"):
        if cand and (Path(cand) / "NvInferRuntime.h").is_file():
            return Path(cand)
    return None


def test_cpp_example_compiles_against_tensorrt_headers(bundle, tmp_path):
    inc = _tensorrt_include()
    cuda = next((p for p in (os.environ.get("CUDA_INCLUDE_DIR"), "/usr/local/cuda/include", *sorted(map(str, Path("/usr/local").glob("cuda*/include"))))
                 if p and (Path(p) / "cuda_runtime_api.h").is_file()), None)
    if inc is None or cuda is None or shutil.which("g++") is None:
        missing = [what for what, have in (("TensorRT headers (NvInferRuntime.h)", inc), ("CUDA headers", cuda),
                                           ("g++", shutil.which("g++"))) if have is None]
        pytest.skip(f"{', '.join(missing)} not found: no PyPI wheel carries TensorRT's headers; set TENSORRT_INCLUDE_DIR "
                    "to JetPack's /usr/include/aarch64-linux-gnu, an SDK's include/, or NVIDIA/TensorRT's include/ "
                    "(docs/deploy.md says which versions the example was compiled against)")
    out, _ = bundle
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-isystem", str(inc), "-isystem", cuda,
                    "-c", str(out / "cpp" / "main.cpp"), "-o", str(tmp_path / "main.o")], check=True)


# --------------------------------------------------------------------------- Triton

def _parse_config(path: Path):
    mc = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install 'tritonclient[grpc]' to parse Triton configs")
    from google.protobuf import text_format

    return mc, text_format.Parse(path.read_text(), mc.ModelConfig())


def test_triton_onnx_repository(work, onnx18):
    from resnet_deploy.api import package

    repo = work / "repo"
    m = package(18, target="triton", out=repo, onnx=onnx18, max_batch=16, instances=2)
    model_dir = repo / "resnet18_fp32"
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx18.read_bytes()
    mc, cfg = _parse_config(model_dir / "config.pbtxt")
    assert cfg.name == "resnet18_fp32" == model_dir.name
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    import onnx

    graph = onnx.load(str(onnx18)).graph
    (inp,), (outp,) = cfg.input, cfg.output
    assert inp.name == graph.input[0].name and outp.name == graph.output[0].name
    assert list(inp.dims) == [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:] == [3, 224, 224]
    assert list(outp.dims) == [1000]
    assert inp.data_type == outp.data_type == mc.DataType.Value("TYPE_FP32")
    assert outp.label_filename == "labels.txt" and len((model_dir / "labels.txt").read_text().splitlines()) == 1000
    pref = list(cfg.dynamic_batching.preferred_batch_size)
    assert pref and all(1 <= b <= 16 for b in pref) and 16 in pref
    (group,) = cfg.instance_group
    # KIND_AUTO: GPU instances on a GPU server, CPU ones on a CPU-only server (KIND_GPU is refused there)
    assert group.count == 2 and group.kind == mc.ModelInstanceGroup.Kind.Value("KIND_AUTO")
    assert m["platform"] == "onnxruntime_onnx"
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["resnet_deploy.role"] == "classifier" and params["resnet_deploy.arch"] == "resnet18"
    assert params["resnet_deploy.precision"] == "fp32" and params["resnet_deploy.num_classes"] == "1000"
    # the image ensemble beside it: preprocess -> classifier -> top-k
    assert m["ensemble"]["name"] == "resnet18_fp32_images" and m["ensemble"]["top"] == 5
    _, ens = _parse_config(repo / "resnet18_fp32_images" / "config.pbtxt")
    assert ens.platform == "ensemble" and ens.max_batch_size == 16
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["resnet18_fp32_preprocess", "resnet18_fp32", "resnet18_fp32_topk"]
    assert [o.name for o in ens.output] == ["logits", "labels", "indices", "probabilities"]
    _, pre = _parse_config(repo / "resnet18_fp32_preprocess" / "config.pbtxt")
    assert pre.backend == "python" and pre.instance_group[0].kind == mc.ModelInstanceGroup.Kind.Value("KIND_CPU")
    recipe = json.loads(pre.parameters["resnet_deploy.recipe"].string_value)
    assert recipe["image_size"] == 224 and recipe["resize"] == 256
    assert (repo / "resnet18_fp32_preprocess" / "1" / "resnet_deploy_serving" / "preprocess.py").read_bytes() == \
        (REPO / "resnet_deploy" / "preprocess.py").read_bytes()
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_triton_config_is_protobuf_so_metadata_cannot_inject(work, tmp_path):
    """Quotes, newlines and braces in recorded metadata stay inside their string (config built as ModelConfig);
    an architecture name that is not a plain name is refused before it becomes a folder or a config value."""
    import onnx
    from fakes import make_tiny_onnx

    from resnet_deploy.deploy import ServingOptions, write_triton_model
    from resnet_deploy.onnx_meta import set_metadata

    path = make_tiny_onnx(tmp_path / "tiny.onnx")
    m = onnx.load(str(path))
    hostile = 'x"\n}\ninstance_group [ { kind: KIND_GPU } ]\n# '
    set_metadata(m, {"arch": "tiny", "weights_source": "a\\b\"c", "label_set": "imagenet", "weights_sha256": hostile})
    onnx.save(m, str(path))
    labels = tmp_path / "labels.txt"
    classes = int(m.graph.output[0].type.tensor_type.shape.dim[1].dim_value)
    labels.write_text("".join(f'c"{i}\n' for i in range(classes)))
    options = ServingOptions(labels=labels, instance_kind="cpu")
    write_triton_model(path, tmp_path / "repo", name="tiny", options=options)
    mc, cfg = _parse_config(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert cfg.parameters["resnet_deploy.weights_sha256"].string_value == hostile
    assert cfg.parameters["resnet_deploy.weights_source"].string_value == 'a\\b"c'
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.Kind.Value("KIND_CPU")]
    set_metadata(m, {"arch": hostile})
    onnx.save(m, str(path))
    with pytest.raises(UserError, match="not a plain name"):
        write_triton_model(path, tmp_path / "repo2", name="tiny", options=options)
    assert not (tmp_path / "repo2" / "tiny").exists()


def test_triton_fixed_batch_export_has_no_labels_on_the_flat_output(tmp_path):
    """A batch-4 export: max_batch_size 0, full dims, no label_filename (classification would rank 4 x C as one
    vector); the ensemble carries the batch and returns per-image top-k."""
    from fakes import make_tiny_onnx

    from resnet_deploy.deploy import ServingOptions, write_triton_model

    path = make_tiny_onnx(tmp_path / "tiny_b4.onnx", batch=4)
    labels = tmp_path / "labels.txt"
    import onnx

    classes = int(onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim[1].dim_value)
    labels.write_text("".join(f"c{i}\n" for i in range(classes)))
    m = write_triton_model(path, tmp_path / "repo", name="tiny", options=ServingOptions(labels=labels, top=3))
    _, cfg = _parse_config(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert cfg.max_batch_size == 0 and list(cfg.output[0].dims) == [4, classes] and cfg.output[0].label_filename == ""
    assert not cfg.HasField("dynamic_batching")
    assert any("no label_filename" in n for n in m["notes"])
    _, ens = _parse_config(tmp_path / "repo" / "tiny_images" / "config.pbtxt")
    assert list(ens.input[0].dims) == [4, 1] and {o.name: list(o.dims) for o in ens.output}["labels"] == [4, 3]


def test_triton_fp16_onnx_types_come_from_the_model(work, onnx18):
    """An FP16 ONNX with FP16 inputs/outputs gets TYPE_FP16 (types are read from the graph)."""
    import onnx
    from onnx import TensorProto, helper

    from resnet_deploy.deploy import ServingOptions, write_triton_model

    m = onnx.load(str(onnx18))
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 3, 224, 224])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 10])])
    tiny = helper.make_model(g, opset_imports=m.opset_import)
    path = work / "tiny.onnx"
    onnx.save(tiny, str(path))
    labels = work / "ten.txt"
    labels.write_text("".join(f"c{i}\n" for i in range(10)))
    write_triton_model(path, work / "repo16", name="tiny", options=ServingOptions(labels=labels))
    mc, cfg = _parse_config(work / "repo16" / "tiny" / "config.pbtxt")
    assert cfg.input[0].data_type == cfg.output[0].data_type == mc.DataType.Value("TYPE_FP16")
    assert list(cfg.output[0].dims) == [10] and cfg.input[0].name == "x"


def test_triton_plan_repository_follows_the_engine_profile(bundle, work, tmp_path):
    """An engine built by the bundle's build_engine.sh (trtexec stubbed) served as tensorrt_plan."""
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    stub, _ = _stub_trtexec(tmp_path)
    subprocess.run([str(copy / "build_engine.sh"), "--trtexec", str(stub), "--opt-batch", "6", "--max-batch", "24"],
                   check=True, capture_output=True)
    engine = copy / "resnet18.fp32.trt.engine"
    from resnet_deploy.api import package

    repo = tmp_path / "repo"
    package(18, target="triton", out=repo, engine=engine)
    model_dir = repo / "resnet18_fp32_trt"
    assert (model_dir / "1" / "model.plan").read_bytes() == engine.read_bytes()
    mc, cfg = _parse_config(model_dir / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 24
    assert list(cfg.input[0].dims) == [3, 224, 224] and list(cfg.output[0].dims) == [1000]
    assert list(cfg.instance_group[0].profile) == ["0"]
    pref = list(cfg.dynamic_batching.preferred_batch_size)
    assert 6 in pref and 24 in pref and max(pref) <= 24
    with pytest.raises(UserError, match="max_batch_size must match the engine profile"):
        package(18, target="triton", out=repo, engine=engine, max_batch=32, name="other")


def test_triton_openvino_backend_serves_the_same_onnx_on_cpu_instances(work, onnx18, tmp_path):
    """`package --triton-backend openvino`: Triton's OpenVINO backend reads model.onnx when told so, takes OpenVINO's
    settings as parameters and runs CPU instances; another backend or a GPU instance kind is one line."""
    from resnet_deploy.api import package

    repo = work / "repo-ov"
    m = package(18, target="triton", out=repo, onnx=onnx18, name="r18_ov", max_batch=8, triton_backend="openvino")
    mc, cfg = _parse_config(repo / "r18_ov" / "config.pbtxt")
    assert (cfg.backend, cfg.platform, cfg.default_model_filename) == ("openvino", "", "model.onnx")
    assert (repo / "r18_ov" / "1" / "model.onnx").read_bytes() == onnx18.read_bytes()
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.Kind.Value("KIND_CPU")]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["PERFORMANCE_HINT"] == "LATENCY" and params["NUM_STREAMS"] == "1" and params["resnet_deploy.role"] == "classifier"
    assert m["platform"] == "openvino" and m["instance_kind"] == "KIND_CPU" and "OpenVINO backend" in m["notes"][-1]
    with pytest.raises(UserError, match="--triton-backend must be one of onnxruntime, openvino"):
        package(18, target="triton", out=tmp_path / "a", onnx=onnx18, triton_backend="tensorrt")
    with pytest.raises(UserError, match="serves on CPU instances"):
        package(18, target="triton", out=tmp_path / "b", onnx=onnx18, triton_backend="openvino", instance_kind="gpu")
    one_line(invoke("package", "-d", "18", "-t", "triton", "--onnx", onnx18, "-o", tmp_path / "c", "--triton-backend", "tvm"),
             2, "--triton-backend must be one of")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_triton_refuses_a_tensorrt_rtx_engine(onnx18, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx not installed (it builds engines on the CPU)")
    from resnet_deploy.deploy import write_triton_model
    from resnet_deploy.engine import BuildOptions, build_engine

    engine = tmp_path / "r18.engine"
    build_engine(onnx18, engine, BuildOptions(flavour="trt-rtx", max_batch=2), precision="fp32")
    with pytest.raises(UserError, match="not TensorRT-RTX"):
        write_triton_model(engine, tmp_path / "repo", name="r18")
    assert not (tmp_path / "repo" / "r18").exists()


# --------------------------------------------------------------------------- bad input, atomicity

def test_package_bad_input(work, onnx18, tmp_path, monkeypatch):
    from resnet_deploy.api import package

    with pytest.raises(UserError, match="unknown target 'edge'"):
        package(18, target="edge", out=tmp_path / "x", onnx=onnx18)
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(UserError, match="2 names but the model has 1000 classes"):
        package(18, target="jetson", out=tmp_path / "x", onnx=onnx18, labels=short)
    with pytest.raises(UserError, match="is a fp32 model but --precision int8"):
        package(18, target="jetson", out=tmp_path / "x", onnx=onnx18, precision="int8")
    assert not (tmp_path / "x").exists()

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty.*--force"):
        package(18, target="jetson", out=occupied, onnx=onnx18)
    assert (occupied / "keep.txt").read_text() == "mine"

    # a failure half way leaves neither a partial bundle nor the staging folder, and the old one intact
    import resnet_deploy.deploy.jetson as jetson

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(jetson, "vendor_package", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        package(18, target="jetson", out=occupied, onnx=onnx18, force=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]
    monkeypatch.undo()

    m = package(18, target="jetson", out=occupied, onnx=onnx18, force=True)
    assert not (occupied / "keep.txt").exists() and (occupied / "manifest.json").is_file() and m["path"] == str(occupied)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_package_cli_errors_are_one_line(onnx18, tmp_path):
    from typer.testing import CliRunner

    from resnet_deploy.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["package", "--depth", "18", "--target", "cloud", "--out", str(tmp_path / "o"), "--onnx", str(onnx18)])
    assert res.exit_code == 2 and "unknown target" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["package", "--depth", "18", "--target", "triton", "--out", str(tmp_path / "repo"),
                              "--onnx", str(onnx18), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["platform"] == "onnxruntime_onnx"
    res = runner.invoke(app, ["package", "--depth", "18", "--target", "triton", "--out", str(tmp_path / "repo"),
                              "--onnx", str(onnx18)])
    assert res.exit_code == 2 and "not empty" in res.output
