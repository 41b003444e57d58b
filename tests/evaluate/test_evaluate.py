"""Labelled folders and top-1 / top-5 evaluation of several precisions side by side."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import image_folder as _folder

from resnet_deploy import api
from resnet_deploy.datasets import labelled_folder
from resnet_deploy.errors import UserError
from resnet_deploy.evaluate import topk_correct

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime: pip install -e '.[cpu]'")
evaluate = api.evaluate


def test_labelled_folder_uses_sorted_folder_index_or_labels_file(tmp_path):
    for name in ("zebra", "ant", "cat"):
        _folder(tmp_path / name, 2, start=hash(name) % 100)
    f = labelled_folder(tmp_path)
    assert f.classes == ["ant", "cat", "zebra"] and list(f.labels) == [0, 0, 1, 1, 2, 2]
    labels = tmp_path.parent / "labels.txt"
    labels.write_text("dog\nzebra\ncat\nant\n")
    f = labelled_folder(tmp_path, labels)
    assert list(f.labels) == [3, 3, 2, 2, 1, 1]
    labels.write_text("dog\ncat\n")
    with pytest.raises(UserError, match="not in the labels file"):
        labelled_folder(tmp_path, labels)


def test_flat_folder_is_refused_for_eval(tmp_path):
    _folder(tmp_path, 3)
    with pytest.raises(UserError, match="no class sub-folders.*3 loose image"):
        labelled_folder(tmp_path)


def test_topk_correct():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]], np.float32)
    c1, c5 = topk_correct(logits, np.array([1, 2, 0]), 2)
    assert list(c1) == [True, False, False] and list(c5) == [True, True, False]


def test_eval_errors(r18, tmp_path):
    root, *_ = r18
    _folder(tmp_path / "data" / "a", 2)
    with pytest.raises(UserError, match="resnet34.int8.onnx does not exist.*quantize --precision int8"):
        evaluate(34, precisions=["int8"], data=tmp_path / "data", out_dir=root)
    with pytest.raises(UserError, match="unknown precision"):
        evaluate(18, precisions=["int3"], data=tmp_path / "data", out_dir=root)
    (tmp_path / "data" / "a" / "bad.jpg").write_bytes(b"nope")
    r = evaluate(18, precisions=["fp32", "int8"], data=tmp_path / "data", out_dir=root, batch=1)
    assert r["images"] == 2 and r["skipped"] == 1 and [x["precision"] for x in r["results"]] == ["fp32", "int8"]
    assert all(0.0 <= x["top1"] <= x["top5"] <= 1.0 for x in r["results"])
