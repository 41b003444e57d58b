"""The command line: JSON output, exit codes, and one clear line for every bad input."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from resnet_deploy.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_info_json():
    r = invoke("info", "--depth", "50", "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["parameters"] == 25_557_032 and d["stages"]["layer4"] == [2048, 7, 7]


def test_info_table():
    r = invoke("info", "--depth", "152")
    assert r.exit_code == 0 and "60,192,808" in r.stdout and "11.51 G" in r.stdout


def test_export_and_parity_json(exported):
    root = exported.root
    exported("resnet18")
    r = invoke("parity", "--depth", "18", "--out", root, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["passed"] and d["rel_l2"] <= 1e-4 and d["candidate"]["backend"] == "ort" and d["precision"] == "fp32"


def one_line_error(r, code=2):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_bad_inputs_one_line_each(tmp_path, exported):
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    (tmp_path / "corrupt.pth").write_bytes(b"garbage")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    onnx18 = exported("resnet18")["path"]
    cases = [
        (("info", "--depth", "42"), "unknown depth or architecture '42'"),
        (("export", "--depth", "18", "--weights", tmp_path / "missing.pth"), "weights file not found"),
        (("export", "--depth", "18", "--weights", tmp_path / "corrupt.pth"), "cannot read weights"),
        (("export", "--depth", "18", "--opset", "7"), "--opset 7 is not supported"),
        (("parity", "--depth", "18", "--onnx", tmp_path / "corrupt.onnx"), "cannot read ONNX model"),
        (("parity", "--depth", "18", "--onnx", tmp_path / "nope.onnx"), "ONNX model not found"),
        (("parity", "--depth", "34", "--onnx", onnx18), "holds resnet18, not resnet34"),
        (("parity", "--depth", "18", "--onnx", onnx18, "--image", tmp_path / "photo.jpg"), "cannot decode image"),
    ]
    import os

    if os.geteuid() != 0:  # root ignores permission bits
        cases.append((("export", "--depth", "18", "--out", readonly), "not writable"))
    cases.append((("export", "--depth", "18", "--out", tmp_path / "corrupt.pth"), "cannot create output folder"))
    for args, expected in cases:
        assert expected in one_line_error(invoke(*args)), args


def test_real_process_exit_code_and_no_traceback():
    p = subprocess.run([sys.executable, "-m", "resnet_deploy.cli", "info", "--depth", "nine"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("error: unknown depth")


def test_onnxruntime_wheel_is_the_one_the_import_loads(tmp_path):
    """A carried onnxruntime-gpu on PYTHONPATH shadows site-packages' onnxruntime (the device
    machine's set-up): reports must name the wheel that runs, not the first one installed."""
    site = tmp_path / "site"
    (site / "onnxruntime").mkdir(parents=True)
    (site / "onnxruntime" / "__init__.py").write_text("__version__ = '9.9.9'\n")
    info = site / "onnxruntime_gpu-9.9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 9.9.9\n")
    (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")
    code = ("from resnet_deploy.versions import onnxruntime_wheel; import onnxruntime; "
            "print(onnxruntime_wheel(), onnxruntime.__version__)")
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "('9.9.9', 'onnxruntime-gpu') 9.9.9"
    # The same -gpu wheel installed but *behind* site-packages: the import loads the CPU wheel,
    # and that is the one to name (not whichever distribution is looked up first).
    behind = (f"import sys; sys.path.append({str(site)!r}); " + code)
    out = subprocess.run([sys.executable, "-c", behind], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout
    version, loaded = out.strip().rsplit(" ", 1)
    assert version == f"({loaded!r}, 'onnxruntime')" and loaded != "9.9.9"
    import onnxruntime

    from resnet_deploy.versions import onnxruntime_wheel

    assert onnxruntime_wheel() == (onnxruntime.__version__, "onnxruntime")  # this machine: the CPU wheel
