"""Issue 27, part 2: int8 that keeps the accuracy (distill/int8_onnx.py, distill/int8_torch.py, docs/int8.md).

The calibrated int8 exports of a tiny BERT against its fp32 self, through the registry's exporters and loaders;
calibration refused without text; and the outlier channels the rule finds kept in fp32, inspected in the graph."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from distill.errors import UserError
from distill.families import FAMILIES
from distill.families.registry import FAITHFUL, LOSSY_MIN_AGREEMENT
from distill.int8_onnx import OUTLIER_SUFFIX, outlier_channels
from distill.int8_torch import OutlierSplitLinear, linear_input_absmax, split_linear_outliers
from distill.teacher import load_pretrained

TRANSFORMER = FAMILIES["transformer"]
INT8_BACKENDS = ["onnx-int8", "torch-int8"]
PLANTED = 5            # the FFN neuron made 50x larger than the rest (as a few of mpnet's are, docs/int8.md)
MAX_LENGTH = 48


@pytest.fixture(scope="module")
def calibration(mr_texts):
    return mr_texts[:128]


@pytest.fixture(scope="module")
def texts(mr_texts):
    return mr_texts[1000:1064]   # never the calibration texts


@pytest.fixture(scope="module")
def outlier_teacher(tmp_path_factory, sensitive_teacher):
    """The sensitive tiny BERT with one FFN neuron of each layer made 50x larger (its output weights 50x smaller):
    the input of each FFN down-projection has an outlier channel that one per-tensor scale rounds the rest against,
    as mpnet's middle layers do (docs/int8.md)."""
    directory = tmp_path_factory.mktemp("outlier-bert")
    shutil.copytree(sensitive_teacher, directory, dirs_exist_ok=True)
    tokenizer, model = load_pretrained(str(directory))
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[PLANTED] *= 50
            layer.intermediate.dense.bias[PLANTED] *= 50
            layer.output.dense.weight[:, PLANTED] /= 50
    model.save_pretrained(directory)
    return directory


def fp32_probs(teacher_dir, texts):
    tokenizer, model = load_pretrained(str(teacher_dir))
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH,
                                   return_tensors="pt")).logits
    return torch.softmax(logits, -1).numpy()


def load(backend: str, out):
    context = {"source": None, "max_length": MAX_LENGTH, "device": "cpu",
               "meta": {"model": "teacher", "backend": backend, "labels": ["fresh", "rotten"]}}
    return TRANSFORMER.backends[backend].load(out, context)


def export(backend: str, teacher_dir, out, calibration):
    out.mkdir(exist_ok=True)
    TRANSFORMER.backends[backend].export(teacher_dir, out, calibration)
    return load(backend, out)


@pytest.mark.parametrize("backend", INT8_BACKENDS)
def test_calibrated_int8_stays_within_its_registered_tolerance(backend, outlier_teacher, calibration, texts,
                                                              tmp_path):
    source = fp32_probs(outlier_teacher, texts)
    assert np.ptp(source[:, 1]) > 0.1, "the teacher must answer differently for different texts"
    probs = export(backend, outlier_teacher, tmp_path / backend, calibration).predict_proba(texts)
    drift = float(np.abs(probs - source).max())
    agreement = float(np.mean(probs.argmax(1) == source.argmax(1)))
    rule = TRANSFORMER.backends[backend]
    assert drift <= rule.tolerance and agreement >= LOSSY_MIN_AGREEMENT
    assert rule.verdict(drift, agreement) == FAITHFUL
    assert np.abs(probs - source).mean() < 0.02


@pytest.mark.parametrize("backend", INT8_BACKENDS)
def test_calibration_without_texts_is_refused(backend, sensitive_teacher, tmp_path):
    with pytest.raises(UserError, match="calibration needs sample texts from the training split"):
        TRANSFORMER.backends[backend].export(sensitive_teacher, tmp_path, [])


def test_the_rule_finds_channels_far_above_the_median():
    absmax = np.ones(64)
    absmax[[3, 40]] = [30.0, 7.0]
    assert outlier_channels(absmax).tolist() == [3, 40]
    assert outlier_channels(absmax, factor=10).tolist() == [3]
    assert outlier_channels(absmax, cap=1).tolist() == [3]
    assert outlier_channels(np.ones(64)).tolist() == []


def test_onnx_outlier_channels_stay_float_in_the_graph(outlier_teacher, calibration, tmp_path):
    import onnx
    from onnx import numpy_helper
    export("onnx-int8", outlier_teacher, tmp_path, calibration)
    graph = onnx.load(str(tmp_path / "model_quantized.onnx")).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept = [n for n in graph.node if n.name.endswith(OUTLIER_SUFFIX)]
    ffn_down = [n for n in kept if "/output/dense" in n.name and "attention" not in n.name]
    assert len(ffn_down) == 2, "each layer's FFN down-projection has the planted outlier"
    for node in kept:
        assert node.op_type == "MatMul" and weights[node.input[1]].dtype == np.float32
    for node in ffn_down:
        take = next(n for n in graph.node if n.output[0] == node.input[0])
        assert PLANTED in weights[take.input[1]].tolist()
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node), "the rest is int8"


def test_torch_outlier_split_is_exact_before_quantisation_and_float_after(outlier_teacher, calibration, texts):
    tokenizer, model = load_pretrained(str(outlier_teacher))
    before = fp32_probs(outlier_teacher, texts)
    absmax = linear_input_absmax(model, tokenizer, calibration)
    assert split_linear_outliers(model, absmax) >= 2
    with torch.no_grad():
        after = torch.softmax(model(**tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH,
                                                return_tensors="pt")).logits, -1).numpy()
    np.testing.assert_allclose(after, before, atol=1e-5)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    split = [m for m in quantized.modules() if isinstance(m, OutlierSplitLinear)]
    assert split and all(m.outlier_weight.dtype == torch.float32 for m in split)
    assert all("quantized" in type(m.rest).__module__ for m in split)


def test_the_old_recipe_fails_on_the_same_model(outlier_teacher, calibration, texts, tmp_path):
    """The control: per-tensor dynamic int8 with no channel kept fp32 (onnx-int8 before version 2) moves the same
    teacher's probabilities by ~0.24 on average (0.01 above), past the tolerance."""
    from transformers import AutoTokenizer

    from distill.int8_onnx import quantize_keeping_outliers
    from distill.teacher_onnx import export_ort_opt
    export_ort_opt(outlier_teacher, tmp_path)
    quantize_keeping_outliers(tmp_path / "model_optimized.onnx", tmp_path / "old.onnx",
                              AutoTokenizer.from_pretrained(tmp_path), calibration, factor=0, per_channel=False)
    (tmp_path / "model_optimized.onnx").unlink()
    probs = load("onnx-int8", tmp_path).predict_proba(texts)
    drift = np.abs(probs - fp32_probs(outlier_teacher, texts))
    assert drift.mean() > 0.1 and drift.max() > TRANSFORMER.backends["onnx-int8"].tolerance
