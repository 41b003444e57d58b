"""INT8 Q/DQ placement for ResNet's relatives: DenseNet's and GoogLeNet's concatenations, SE-ResNet's gates.

Each network is exported by the toolkit at 64x64 with 10 classes (small and quick; the graph has the
same patterns as at 224x224) and quantized by the toolkit's ModelOpt PTQ on 4 photograph views. The
TensorRT-RTX builds of the full-size networks are in tests/engine/test_build.py.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import resnet_deploy as rd
from resnet_deploy.onnx_export import export_onnx
from resnet_deploy.onnx_meta import consumers_of
from resnet_deploy.precision import modelopt_available
from resnet_deploy.precision.placement import SIGMOID_SCALE, place_for_tensorrt, share_concat_scales
from resnet_deploy.precision.ptq import quantize_int8
from resnet_deploy.preprocess import Preprocess, augmented_photos

SMALL = Preprocess(image_size=64, resize=64)

# One xdist worker runs the module: small_int8's networks (seeded at 224, a minute for the three relatives) are
# made once, not once per worker.
pytestmark = [pytest.mark.skipif(not modelopt_available()[0], reason=f"ModelOpt is needed: {modelopt_available()[1]}"),
              pytest.mark.xdist_group("placement")]


@pytest.fixture(scope="module")
def small_int8(tmp_path_factory):
    """``small_int8(arch) -> (fp32 path, int8 path, manifest facts)``, each made once."""
    root = tmp_path_factory.mktemp("placement")
    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            model = rd.create_model(arch, num_classes=10)
            fp32 = root / f"{arch}.fp32.onnx"
            export_onnx(model, fp32, facts=model.card.facts(), image_size=SMALL.image_size, recipe=SMALL)
            int8 = root / f"{arch}.int8.onnx"
            facts = quantize_int8(fp32, int8, augmented_photos(4, SMALL), high_precision="fp32")  # the CLI's default
            cache[arch] = (fp32, int8, facts)
        return cache[arch]

    return get


class View:
    def __init__(self, path):
        self.model = onnx.load(str(path))
        g = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers = defaultdict(list, consumers_of(g))
        self.nodes = list(g.node)

    def scale(self, qdq) -> float:
        return float(self.inits[qdq.input[1]].ravel()[0])

    def of(self, op):
        return [n for n in self.nodes if n.op_type == op]

    def source(self, tensor):
        n = self.producer.get(tensor)
        return n.op_type if n is not None else None


def run(path, x, optimize=False):
    so = ort.SessionOptions()
    if not optimize:  # the graph as written, not ONNX Runtime's own QDQ fusions
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_densenet_concats_read_int8_inputs_with_one_scale_per_dense_block(small_int8):
    _, int8, facts = small_int8("densenet121")
    v = View(int8)
    concats = v.of("Concat")
    assert len(concats) == 62 and facts["placement"]["concat_groups"] == 4 and facts["placement"]["concats"] == 62
    block_scales = set()
    for c in concats:
        (q,) = v.consumers[c.output[0]]  # the Concat's output is quantized once, for its BatchNorm
        assert q.op_type == "QuantizeLinear"
        for t in c.input:  # ... and every input arrives through a DQ of exactly that scale
            dq = v.producer[t]
            assert dq.op_type == "DequantizeLinear" and v.scale(dq) == v.scale(q), (c.name, t)
        block_scales.add(v.scale(q))
    assert len(block_scales) == 4  # one per dense block
    # each dense layer's 3x3 conv output is quantized exactly once (TensorRT fuses that Q into the conv)
    for conv in v.of("Conv"):
        qs = [u for u in v.consumers[conv.output[0]] if u.op_type == "QuantizeLinear"]
        assert len(qs) <= 1, conv.name


def test_googlenet_inception_branches_are_quantized_once_with_the_concat_scale_and_nothing_else_changes(small_int8):
    """One Concat per Inception module: quantizing its inputs with its output's scale is exact."""
    _, int8, facts = small_int8("googlenet")
    v = View(int8)
    assert facts["placement"]["concats"] == 9 and facts["placement"]["inputs_quantized"] == 36
    for c in v.of("Concat"):
        (q,) = v.consumers[c.output[0]]
        assert {v.scale(v.producer[t]) for t in c.input} == {v.scale(q)}
        assert {v.source(v.producer[t].input[0]) for t in c.input} == {"QuantizeLinear"}
    # exactness: undo nothing, re-derive from a copy without the pass and compare the graphs' outputs
    plain = onnx.load(str(int8))
    for n in plain.graph.node:  # drop the inserted pairs: each Concat reads the ReLU outputs directly
        if n.op_type == "Concat":
            for k, t in enumerate(n.input):
                n.input[k] = v.producer[v.producer[t].input[0]].input[0]
    x = augmented_photos(6, SMALL, seed=3)
    path = int8.with_name("googlenet.plain.onnx")
    onnx.save(plain, str(path))
    np.testing.assert_allclose(run(path, x), run(int8, x), rtol=0, atol=1e-5)


def test_se_gates_use_the_sigmoid_range_and_the_gating_runs_on_int8_inputs(small_int8):
    _, int8, facts = small_int8("seresnet50")
    v = View(int8)
    assert facts["placement"]["sigmoid_gates"] == 16
    for s in v.of("Sigmoid"):
        (q,) = v.consumers[s.output[0]]
        assert q.op_type == "QuantizeLinear" and v.scale(q) == pytest.approx(SIGMOID_SCALE)
    muls = v.of("Mul")
    assert len(muls) == 16
    for m in muls:  # branch * gate: both INT8, the branch's Q fused into conv3
        assert [v.source(t) for t in m.input] == ["DequantizeLinear", "DequantizeLinear"]
    for a in v.of("Add"):  # the residual sum takes the gated branch in INT8
        assert "DequantizeLinear" in [v.source(t) for t in a.input]


def test_the_passes_keep_the_int8_model_close_to_fp32(small_int8):
    """Against the FP32 export on photographs, the placed INT8 graphs stay as close as ModelOpt's own."""
    for arch in ("densenet121", "googlenet", "seresnet50"):
        fp32, int8, _ = small_int8(arch)
        x = augmented_photos(8, SMALL, seed=5)
        ref, got = run(fp32, x, optimize=True), run(int8, x)
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        assert np.isfinite(got).all() and cos.mean() > 0.9, (arch, cos)


def test_resnets_are_left_as_modelopt_made_them(small_int8):
    _, int8, facts = small_int8("resnet18")
    assert facts["placement"] == {"version": facts["placement"]["version"], "concat_groups": 0, "concats": 0,
                                  "inputs_quantized": 0, "sigmoid_gates": 0}
    model = onnx.load(str(int8))
    before = model.graph.SerializeToString()
    place_for_tensorrt(model)
    assert model.graph.SerializeToString() == before


def test_a_concat_with_a_high_precision_consumer_is_left_alone(small_int8):
    """Only Concats whose every consumer is a per-tensor INT8 Q are ModelOpt's pattern; others stay."""
    _, int8, _ = small_int8("googlenet")
    model = onnx.load(str(int8))
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    model.graph.node.append(onnx.helper.make_node("Identity", [concat.output[0]], ["extra"], name="extra_reader"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, None))
    facts = share_concat_scales(model)
    assert facts["concats"] == 8


def test_fp16_high_precision_graphs_keep_their_scale_type(small_int8, tmp_path):
    """With --high-precision fp16 ModelOpt's scales are float16; the new ones must be too (else no runtime loads it)."""
    fp32, _, _ = small_int8("googlenet")
    out = tmp_path / "googlenet.int8.fp16hp.onnx"
    facts = quantize_int8(fp32, out, augmented_photos(2, SMALL), high_precision="fp16")
    assert facts["placement"]["inputs_quantized"] == 36
    v = View(out)
    assert {v.inits[q.input[1]].dtype for q in v.of("QuantizeLinear") if q.input[1] in v.inits} == {np.dtype("float16")}
    # valid ONNX that runs as written (ONNX Runtime's own QLinearConcat fusion takes float32 scales only, so
    # its optimizer refuses this graph: docs/precision.md says to keep --high-precision fp32 for ORT CPU)
    assert np.isfinite(run(out, augmented_photos(2, SMALL))).all()


def test_the_placement_is_part_of_the_int8_reuse_key(small_int8):
    """An INT8 ONNX made before the passes (its request has no placement) is made again, not reused."""
    from resnet_deploy.precision.artifact import precision_request, read_fp32_source
    from resnet_deploy.precision.placement import PLACEMENT_VERSION

    fp32, _, facts = small_int8("googlenet")
    request = precision_request(fp32, "int8", read_fp32_source(fp32))
    assert request["placement"] == PLACEMENT_VERSION == facts["placement"]["version"]
    assert "placement" not in precision_request(fp32, "fp16", read_fp32_source(fp32))
