"""Seconds per candidate scoring on ONNX Runtime CPU vs OpenVINO CPU (what ``--score-engine`` picks between).

    python benchmarks/int8-target/score_engines.py

The trained CIFAR ResNet-20 and ResNet-56, plain INT8 (64 bundled photo views), four search
candidates each (one block kept in high precision), each scored on 240 photo crops by both runners,
interleaved; the time includes loading/compiling the candidate, as in a search.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.tuning import Measure, keep_high_precision, load_eval_set, units_of  # noqa: E402


def main(work: Path = Path("/tmp/resnet-deploy-score-engines")) -> None:
    spec = importlib.util.spec_from_file_location("int8_target_run", HERE / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    views = work / "views240"
    bench.write_views(views, 240, bench.SEARCH_SEED)
    for depth, weights in bench.CHECKPOINTS.items():
        out = work / f"resnet{depth}"
        fp32 = rd.export(depth, weights=weights, out_dir=out)["path"]
        int8 = onnx.load(rd.quantize(depth, "int8", weights=weights, out_dir=out, calib_samples=64)["path"])
        images = load_eval_set(views, recipe_from_metadata(read_metadata(onnx.load(fp32, load_external_data=False))))
        candidates = [keep_high_precision(int8, [u]) for u in units_of(fp32)[1:5]]
        measures = {e: Measure(fp32, images, out, backend=e) for e in ("ort", "openvino")}
        seconds = dict.fromkeys(measures, 0.0)
        for c in candidates:
            for e, m in measures.items():
                t0 = time.perf_counter()
                m.score(c)
                seconds[e] += time.perf_counter() - t0
        per = {e: s / len(candidates) for e, s in seconds.items()}
        print(f"ResNet-{depth}, {len(images.batch)} images: " + ", ".join(f"{e} {v:.2f} s" for e, v in per.items())
              + f" per candidate ({per['ort'] / per['openvino']:.1f}x)")


if __name__ == "__main__":
    main()
