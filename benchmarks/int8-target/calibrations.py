"""Plain INT8 of the trained CIFAR ResNets under each calibration method: is there a better starting point?

    python benchmarks/int8-target/calibrations.py

ModelOpt entropy and min-max, and ONNX Runtime's 99.999th percentile (``--calib-method``), each
calibrated on the 64 bundled photo views; agreement with FP32's top-1 on run.py's 240 search crops
and 240 held-out crops, scored on OpenVINO CPU (the search's default runner).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.tuning import Measure, load_eval_set  # noqa: E402


def main(work: Path = Path("/tmp/resnet-deploy-calibrations")) -> None:
    spec = importlib.util.spec_from_file_location("int8_target_run", HERE / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folders = {"search": work / "views-search", "held-out": work / "views-heldout"}
    bench.write_views(folders["search"], 240, bench.SEARCH_SEED)
    bench.write_views(folders["held-out"], 240, bench.HELDOUT_SEED)
    print("| network | method | search | held-out |\n|---|---|---|---|")
    for depth, weights in bench.CHECKPOINTS.items():
        out = work / f"resnet{depth}"
        fp32 = rd.export(depth, weights=weights, out_dir=out)["path"]
        recipe = recipe_from_metadata(read_metadata(onnx.load(fp32, load_external_data=False)))
        measures = {k: Measure(fp32, load_eval_set(f, recipe), out, backend="openvino") for k, f in folders.items()}
        for method in ("entropy", "minmax", "percentile"):
            int8 = rd.quantize(depth, "int8", weights=weights, out_dir=out / method, source=fp32, method=method,
                               calib_samples=64, force=True)["path"]
            s = {k: m.score(int8)["score"] for k, m in measures.items()}
            print(f"| ResNet-{depth} | {method} | {s['search']:.2%} | {s['held-out']:.2%} |", flush=True)


if __name__ == "__main__":
    main()
