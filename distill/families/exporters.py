"""Exporters and loaders: each exporter writes one variant of a model into a directory, each loader turns that
directory back into a Predictor. Which family uses which pair, and with what drift rule, is registered in
distill/families/builtin.py; validation lives in bench/export.py.

Exporter signature: `export(source, out_dir, sample_texts)`, where `source` is the fitted student, or for the
teacher its model directory. Loader signature: `load(out_dir, ctx)` with ctx = {source, max_length, device, meta}.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import teacher_onnx
from ..teacher_onnx import hf_dir
from .predictor import BiLSTMPredictor, LinearTextPredictor, OnnxPredictor, TransformerPredictor


# Students' graphs are a few small ops per call; a second ORT thread costs more in synchronisation than it saves
# (BiLSTM int8, batch 1, measured here: 0.70 ms on one thread vs 0.81 ms on two).
STUDENT_ORT_THREADS = 1


ort_session = teacher_onnx.session


# --- transformers (teacher, any transformer student) ------------------------------------------------------------
# The ONNX exports live in distill/teacher_onnx.py, beside `OnnxLogits`, which the labeller runs them with.
def _hf(source_dir: Path, torchscript=False):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModelForSequenceClassification.from_pretrained(source_dir, torchscript=torchscript,
                                                               attn_implementation="eager")
    return tokenizer, model.eval()


def _trace(model, tokenizer, sample_texts, out: Path):
    enc = tokenizer(sample_texts[:4], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        traced = torch.jit.trace(model, (enc["input_ids"], enc["attention_mask"]), strict=False)
    traced = torch.jit.freeze(traced.eval()) if not _has_quantized(model) else traced
    torch.jit.save(traced, str(out / "model.pt"))
    tokenizer.save_pretrained(out)


def _has_quantized(model) -> bool:
    return any("quantized" in type(m).__module__ for m in model.modules())


def export_transformer_torchscript(source, out, sample_texts):
    with hf_dir(source) as source_dir:
        tokenizer, model = _hf(source_dir, torchscript=True)
    _trace(model, tokenizer, sample_texts, out)


def export_transformer_torch_int8(source, out, sample_texts):
    """Dynamic int8 with per-channel weights, outlier input channels (found on `sample_texts`, training text) in
    fp32: distill/int8_torch.py."""
    from ..int8_torch import quantize_keeping_outliers
    with hf_dir(source) as source_dir:
        tokenizer, model = _hf(source_dir, torchscript=True)
    _trace(quantize_keeping_outliers(model, tokenizer, sample_texts), tokenizer, sample_texts, out)


def export_transformer_onnx(source, out, sample_texts):
    teacher_onnx.export_onnx(source, out)


def export_transformer_ort_opt(source, out, sample_texts):
    teacher_onnx.export_ort_opt(source, out)


def export_transformer_onnx_int8(source, out, sample_texts):
    teacher_onnx.export_onnx_int8(source, out, sample_texts)


def load_transformer_torchscript(out, ctx):
    from transformers import AutoTokenizer
    module = torch.jit.load(str(out / "model.pt"), map_location=ctx["device"])
    return TransformerPredictor(tokenizer=AutoTokenizer.from_pretrained(out), module=module,
                                max_length=ctx["max_length"], device=ctx["device"], traced=True, **ctx["meta"])


def load_transformer_onnx(out, ctx):
    from transformers import AutoTokenizer
    onnx_file = next(out.glob("*.onnx"))
    session = ort_session(onnx_file, provider=ctx.get("provider", "CPUExecutionProvider"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    wanted = {i.name for i in session.get_inputs()}
    max_length = ctx["max_length"]

    def encode(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in wanted}

    return OnnxPredictor(session=session, encode=encode, **ctx["meta"])


# --- BiLSTM ----------------------------------------------------------------------------------------------------
def _sample_ids(estimator, sample_texts):
    return estimator.encode(sample_texts[:4])


def export_bilstm_torchscript(estimator, out, sample_texts):
    with torch.no_grad():
        traced = torch.jit.trace(estimator.module_.eval(), (_sample_ids(estimator, sample_texts),))
    torch.jit.save(torch.jit.freeze(traced), str(out / "model.pt"))


def export_bilstm_onnx(estimator, out, sample_texts):
    ids = _sample_ids(estimator, sample_texts)
    torch.onnx.export(estimator.module_.eval(), (ids,), str(out / "model.onnx"), input_names=["input_ids"],
                      output_names=["logits"], dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}},
                      dynamo=False)


def export_bilstm_onnx_int8(estimator, out, sample_texts):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    export_bilstm_onnx(estimator, out, sample_texts)
    quantize_dynamic(out / "model.onnx", out / "model_quantized.onnx", weight_type=QuantType.QInt8)
    (out / "model.onnx").unlink()


def load_bilstm_torchscript(out, ctx):
    return BiLSTMPredictor(estimator=ctx["source"], module=torch.jit.load(str(out / "model.pt")), **ctx["meta"])


def load_bilstm_onnx(out, ctx):
    session = ort_session(next(out.glob("*.onnx")), threads=STUDENT_ORT_THREADS)
    estimator = ctx["source"]
    return OnnxPredictor(session=session, encode=lambda texts: {"input_ids": estimator.encode(texts).numpy()},
                         **ctx["meta"])


# --- scikit-learn students -------------------------------------------------------------------------------------
def export_sklearn_onnx(estimator, out, sample_texts):
    """The whole pipeline, TF-IDF included, as one ONNX graph over raw strings (skl2onnx)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.pipeline import Pipeline
    pipeline = Pipeline([("tfidf", estimator.vectorizer_), ("head", estimator.model_)])
    # ONNX lower-cases with a C++ locale; C.UTF-8 ships with every glibc, en_US.UTF-8 (the default) does not.
    # ORT's tokenizer speaks re2, which has no (?u) flag (its \w is ASCII-only: validation shows the cost).
    tokenexp = estimator.vectorizer_.token_pattern.replace("(?u)", "")
    options = {id(estimator.vectorizer_): {"locale": "C.UTF-8", "tokenexp": tokenexp}}
    if hasattr(estimator.model_, "predict_proba"):
        options[id(estimator.model_)] = {"zipmap": False}
    onx = to_onnx(pipeline, initial_types=[("text", StringTensorType([None, 1]))], options=options,
                  target_opset={"": 17, "ai.onnx.ml": 3})
    if estimator.vectorizer_.sublinear_tf:
        fix_sublinear_tf(onx)
    (out / "model.onnx").write_bytes(onx.SerializeToString())


def fix_sublinear_tf(model) -> None:
    """skl2onnx writes sublinear TF as log(tf + 1); scikit-learn computes 1 + log(tf) on non-zero counts.
    Rewrite each Add(tf, ones) -> Log into Log(tf) -> Add(ones) -> Max(0): log(0) = -inf becomes 0 again."""
    from onnx import helper, numpy_helper
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    for log in [n for n in graph.node if n.op_type == "Log"]:
        add = producers.get(log.input[0])
        if add is None or add.op_type != "Add" or not add.input[1].startswith("ones"):
            continue
        result, tf = log.output[0], add.input[0]
        zero = f"{result}_zero"
        graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=np.float32), zero))
        new_nodes = [helper.make_node("Log", [tf], [f"{result}_logtf"]),
                     helper.make_node("Add", [f"{result}_logtf", add.input[1]], [f"{result}_plus1"]),
                     helper.make_node("Max", [f"{result}_plus1", zero], [result])]
        position = list(graph.node).index(add)
        graph.node.remove(add)
        graph.node.remove(log)
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position + offset, node)


def load_sklearn_onnx(out, ctx):
    session = ort_session(out / "model.onnx", threads=STUDENT_ORT_THREADS)
    probabilities = len(session.get_outputs()) > 1  # classifiers: (label, probabilities); ridge: (scores,)
    return OnnxPredictor(session=session, encode=lambda texts: {"text": np.array(texts, dtype=object)[:, None]},
                         outputs_probabilities=probabilities, **ctx["meta"])


def export_linear_numpy(estimator, out, sample_texts):
    """A TF-IDF student as plain arrays: vocabulary, idf, and its head folded into softmax(x @ weights + bias).

    Logistic regression: binary scores are [0, z], multinomial ones x @ coef.T + intercept; naive Bayes: the joint
    log-likelihood x @ feature_log_prob.T + class_log_prior; ridge: its regression scores. The analyzer settings are
    saved so the loader rebuilds scikit-learn's own (compiled) analyzer."""
    vectorizer, head = estimator.vectorizer_, estimator.model_
    if hasattr(head, "feature_log_prob_"):
        weights, bias = head.feature_log_prob_.T, head.class_log_prior_
    else:
        coef, intercept = np.atleast_2d(head.coef_), np.atleast_1d(head.intercept_)
        if coef.shape[0] == 1 and hasattr(head, "predict_proba"):
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        weights, bias = coef.T, intercept
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    settings = {key: getattr(vectorizer, key) for key in ("lowercase", "token_pattern", "ngram_range", "analyzer",
                                                          "strip_accents", "sublinear_tf", "norm")}
    if settings["analyzer"] != "word" or settings["norm"] != "l2" or settings["strip_accents"]:
        raise NotImplementedError(f"numpy export covers l2-normalised word n-grams only, not {settings}")
    (out / "analyzer.json").write_text(json.dumps({**settings, "terms": terms}))
    np.savez(out / "linear.npz", idf=vectorizer.idf_, weights=np.asarray(weights, dtype=np.float64),
             bias=np.asarray(bias, dtype=np.float64))


def load_linear_numpy(out, ctx):
    from sklearn.feature_extraction.text import TfidfVectorizer
    settings = json.loads((out / "analyzer.json").read_text())
    analyzer = TfidfVectorizer(lowercase=settings["lowercase"], token_pattern=settings["token_pattern"],
                               ngram_range=tuple(settings["ngram_range"])).build_analyzer()
    with np.load(out / "linear.npz") as arrays:
        idf, weights, bias = arrays["idf"], arrays["weights"], arrays["bias"]
    return LinearTextPredictor(analyzer=analyzer, vocabulary={t: i for i, t in enumerate(settings["terms"])},
                               idf=idf, weights=weights, bias=bias, sublinear_tf=settings["sublinear_tf"],
                               **ctx["meta"])


# --- static embeddings (Model2Vec) -----------------------------------------------------------------------------
class _MeanOfRows(torch.nn.Module):
    """logits = mean of table[ids] over the unmasked positions + bias."""

    def __init__(self, table, bias):
        super().__init__()
        self.table = torch.nn.Parameter(torch.from_numpy(table), requires_grad=False)
        self.bias = torch.nn.Parameter(torch.from_numpy(bias), requires_grad=False)

    def forward(self, input_ids, mask):
        summed = (self.table[input_ids] * mask.unsqueeze(-1)).sum(1)
        return summed / mask.sum(1, keepdim=True).clamp(min=1.0) + self.bias


def export_static_onnx(estimator, out, sample_texts):
    ids, mask = estimator.pad(estimator.token_ids(sample_texts[:4]))
    torch.onnx.export(_MeanOfRows(estimator.table_, estimator.bias_), (torch.from_numpy(ids), torch.from_numpy(mask)),
                      str(out / "model.onnx"), input_names=["input_ids", "mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "mask": {0: "batch", 1: "sequence"}},
                      dynamo=False)


def load_static_onnx(out, ctx):
    session = ort_session(out / "model.onnx", threads=STUDENT_ORT_THREADS)
    estimator = ctx["source"]

    def encode(texts):
        ids, mask = estimator.pad(estimator.token_ids(texts))
        return {"input_ids": ids, "mask": mask}

    return OnnxPredictor(session=session, encode=encode, **ctx["meta"])
