"""Faults injected for real: a full filesystem, SIGINT and SIGTERM at several points of export,
quantize and build, a process killed between an artifact and its manifest, stale temporaries.

Every one must end in one short line and the documented exit code, with nothing half-written and
no temporary file of ours left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_deploy.artifacts import atomic_write_text, manifest_path, read_manifest, sha256_file

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "signals_driver.py"
ROOT = HERE.parents[1]


def cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    lines = [ln for ln in r.stderr.splitlines()
             if ln.strip() and ("error" in ln.lower() or "interrupted" in ln or "terminated" in ln)]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-2000:]
    assert lines, r.stderr[-2000:]
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    return lines[-1]


def ours(folder: Path) -> list[str]:
    """Temporary files and folders this toolkit writes (.name.<pid>.<token>.tmp / .work / .old)."""
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".work", ".old")))


# ------------------------------------------------------------------------------------------ a full disk


@pytest.fixture()
def small_disk(tmp_path):
    """A 20 MiB tmpfs (root can mount one, as CI runs); skipped, saying why, where it cannot."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk ({r.stderr.strip() or 'mount failed'}); "
                    "CI runs as root and can")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(small_disk):
    r = cli("export", "--depth", 18, "--out", small_disk)  # 45 MB into 20 MiB
    one_line(r, 2, "cannot write", "resnet18.fp32.onnx", "no space left")
    assert list(small_disk.iterdir()) == []  # no half model, no manifest, no empty <arch>/ folder


def test_quantize_to_a_full_disk_is_one_line_and_leaves_nothing(small_disk, exported):
    src = exported("resnet18")["path"]
    (small_disk / "filler").write_bytes(b"\0" * (14 << 20))  # ModelOpt's working copies no longer fit
    r = cli("quantize", "--depth", 18, "-p", "int8", "--onnx", src, "--calib-samples", 8, "--out", small_disk)
    one_line(r, 2, "no space left")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_build_to_a_full_disk_is_one_line_and_leaves_nothing(small_disk, exported):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    src = exported("resnet18")["path"]
    r = cli("build", "--depth", 18, "--engine", "trt-rtx", "--onnx", src, "--max-batch", 2, "--out", small_disk)
    one_line(r, 2, "cannot write", "no space left")
    assert list(small_disk.iterdir()) == []


# ------------------------------------------------------------------------------------------ signals

# The paper's CIFAR ResNet-20 (32x32, 0.3 M parameters): every stage runs the same code as for ResNet-18
# at a tenth of the time, and these tests start a dozen processes.


POINTS = [
    ("export", "resnet_deploy.onnx_export:check_onnx", ("export", "--depth", 20)),
    ("export", "resnet_deploy.onnx_export:fold_batchnorm", ("export", "--depth", 20)),
    ("quantize", "resnet_deploy.precision.artifact:load_calibration", ("quantize", "--depth", 20, "-p", "int8")),
    ("quantize", "modelopt.onnx.quantization:quantize", ("quantize", "--depth", 20, "-p", "int8")),
    ("quantize", "modelopt.onnx.autocast:convert_to_mixed_precision", ("quantize", "--depth", 20, "-p", "fp16")),
    ("build", "resnet_deploy.engine.build:parse_onnx", ("build", "--depth", 20, "--engine", "trt-rtx", "--max-batch", 2)),
    ("build", "resnet_deploy.engine.build:inspect_with_gpu",
     ("build", "--depth", 20, "--engine", "trt-rtx", "--max-batch", 2)),  # the engine is written, its manifest not yet
]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage, point, args", POINTS, ids=[p[1].split(":")[1] for p in POINTS])
def test_a_signal_leaves_the_previous_artifacts_and_no_temporary(stage, point, args, sig, exported, tmp_path):
    if stage == "build":
        pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    if stage == "quantize":
        pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra")
    out = tmp_path / "engines"
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    # what is already there must survive: the FP32 export (and, for build, a previous engine)
    fp32 = out / "resnet20" / "resnet20.fp32.onnx"
    fp32.parent.mkdir(parents=True)
    src = Path(exported("resnet20")["path"])
    fp32.write_bytes(src.read_bytes())
    manifest_path(fp32).write_text(manifest_path(src).read_text())
    before = {p.name: sha256_file(p) for p in fp32.parent.iterdir()}
    proc = subprocess.Popen([sys.executable, str(DRIVER), point, "--", *map(str, args), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    deadline = time.time() + 300
    line = ""
    while "READY" not in line and time.time() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
    assert "READY" in line, f"the command never reached {point}: {proc.stderr.read()[-2000:]}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    code = 130 if sig == signal.SIGINT else 143
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    one_line(r, code, "nothing half-written")
    after = {p.name: sha256_file(p) for p in fp32.parent.iterdir() if p.is_file()}
    for name, sha in before.items():
        assert after.get(name) == sha, name  # the previous artifacts, untouched
    assert set(after) == set(before), sorted(set(after) - set(before))  # nothing new, half or whole
    # $TMPDIR: nothing of ours or ModelOpt's (tmp*.onnx); onnxruntime's import keeps a session-id file there
    assert ours(out) == [] and [p.name for p in (tmp_path / "tmp").iterdir() if p.name != ".ses"] == []


# ------------------------------------------------------------------------------------------ manifests


KILL_AT_MANIFEST = """
import os, sys
import resnet_deploy.artifacts as a
real = a.write_manifest
target = sys.argv[1]
def killed(artifact, facts):
    if str(artifact).endswith(target):
        os._exit(9)  # SIGKILL's effect: no cleanup at all, between the artifact and its manifest
    return real(artifact, facts)
a.write_manifest = killed
import resnet_deploy.onnx_export as e, resnet_deploy.precision.artifact as p, resnet_deploy.engine.build as b
e.write_manifest = p.write_manifest = b.write_manifest = killed
from resnet_deploy.cli import main
sys.argv = ["resnet-deploy", *sys.argv[2:]]
main()
"""


def test_a_kill_between_artifact_and_manifest_never_leaves_them_disagreeing(tmp_path):
    out = tmp_path / "engines"
    first = cli("export", "--depth", 20, "--out", out, "--seed", 1)
    assert first.returncode == 0, first.stderr
    onnx = out / "resnet20" / "resnet20.fp32.onnx"
    old = read_manifest(onnx)
    r = subprocess.run([sys.executable, "-c", KILL_AT_MANIFEST, "resnet20.fp32.onnx", "export", "--depth", "20", "--out",
                        str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 9
    # the new model is in place; the old manifest went before it did, so none disagrees with it
    assert sha256_file(onnx) != old["sha256"] and not manifest_path(onnx).exists()
    # nothing could clean up: the previous model's link (kept to restore it on an interruption) stays
    assert [name.endswith(".old") for name in ours(out)] == [True]
    # a reader does not trust an ONNX without its manifest: the next step makes it whole again, and
    # its write removes the dead process's leftovers
    q = cli("quantize", "--depth", 20, "-p", "fp32", "--out", out, "--json")
    assert q.returncode == 0, q.stderr
    assert read_manifest(onnx)["sha256"] == sha256_file(onnx)
    assert ours(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", ["export", "build"])
def test_a_signal_between_artifact_and_manifest_brings_the_previous_pair_back(stage, sig, tmp_path):
    """The new file is in place, its manifest not yet written: stopped there, the previous file and
    manifest return (neither the new file alone, nor the new file beside the old manifest)."""
    if stage == "build":
        pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    out = tmp_path / "engines"
    args = {"export": ("export", "--depth", 20, "--seed", 1, "--out", out),
            "build": ("build", "--depth", 20, "--engine", "trt-rtx", "--max-batch", 2, "--out", out)}[stage]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    folder = out / "resnet20"
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    again = {"export": ("export", "--depth", 20, "--seed", 2, "--out", out),  # another model
             "build": (*args, "--force", "--max-batch", 4)}[stage]  # another engine
    proc = subprocess.Popen([sys.executable, str(DRIVER), "resnet_deploy.artifacts:write_manifest", "--",
                             *map(str, again)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = ""
    while "READY" not in line and proc.poll() is None:
        line = proc.stderr.readline()
    assert "READY" in line, proc.stderr.read()[-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    one_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err),
             130 if sig == signal.SIGINT else 143, "nothing half-written")
    after = {p.name: sha256_file(p) for p in folder.iterdir()}
    assert after == before  # the previous pair, byte for byte, and nothing else


def test_a_manifest_that_disagrees_with_its_file_is_not_trusted(tmp_path, exported):
    out = tmp_path / "engines"
    onnx = out / "resnet20" / "resnet20.fp32.onnx"
    onnx.parent.mkdir(parents=True)
    src = Path(exported("resnet20")["path"])
    onnx.write_bytes(src.read_bytes())
    m = read_manifest(src)
    atomic_write_text(manifest_path(onnx), __import__("json").dumps({**m, "sha256": "0" * 64}))
    r = cli("quantize", "--depth", 20, "-p", "fp32", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert read_manifest(onnx)["sha256"] == sha256_file(onnx)  # re-exported rather than reported stale


def test_stale_temporaries_of_a_killed_writer_are_removed_on_the_next_write(tmp_path):
    out = tmp_path / "engines"
    r = cli("export", "--depth", 20, "--out", out)
    assert r.returncode == 0, r.stderr
    folder = out / "resnet20"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".resnet20.fp32.onnx.{dead.stdout.strip()}.deadbeef.tmp"
    stale.write_bytes(b"half a model from a killed process")
    mine = folder / f".resnet20.fp32.onnx.{os.getpid()}.cafe.tmp"  # a live writer's: left alone
    mine.write_bytes(b"in progress")
    r = cli("export", "--depth", 20, "--out", out)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and mine.exists()
