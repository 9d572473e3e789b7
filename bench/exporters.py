"""Exporters: each writes one variant of a model into a directory. Validation lives in bench/export.py.

Each family lists its backends declaratively in `BACKENDS`; `EXPORTERS[(family, backend)]` writes the files and
`LOADERS[(family, backend)]` turns the directory back into a Predictor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .predictor import BiLSTMPredictor, OnnxPredictor, TransformerPredictor

BACKENDS = {
    "transformer": ["torchscript", "torch-int8", "onnx", "ort-opt", "onnx-int8"],
    "bilstm": ["torchscript", "onnx", "onnx-int8"],
    "sklearn": ["onnx"],
}
NATIVE_BACKEND = {"transformer": "torch", "bilstm": "torch", "sklearn": "sklearn", "ensemble": "native"}


def ort_session(path: Path, threads: int | None = None, provider: str = "CPUExecutionProvider"):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=[provider])


# --- transformers (teacher, any transformer student) ------------------------------------------------------------
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


def export_transformer_torchscript(source_dir, out, sample_texts):
    tokenizer, model = _hf(source_dir, torchscript=True)
    _trace(model, tokenizer, sample_texts, out)


def export_transformer_torch_int8(source_dir, out, sample_texts):
    tokenizer, model = _hf(source_dir, torchscript=True)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    _trace(quantized, tokenizer, sample_texts, out)


def export_transformer_onnx(source_dir, out, sample_texts):
    from optimum.exporters.onnx import main_export
    main_export(str(source_dir), out, task="text-classification", do_validation=True)


def export_transformer_ort_opt(source_dir, out, sample_texts):
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig
    model = ORTModelForSequenceClassification.from_pretrained(str(source_dir), export=True)
    ORTOptimizer.from_pretrained(model).optimize(OptimizationConfig(optimization_level=2), save_dir=out)
    _keep_only(out, "model_optimized.onnx")


def export_transformer_onnx_int8(source_dir, out, sample_texts):
    """Dynamic int8 on top of the ORT-optimised graph. optimum's ORTQuantizer cannot pass the DefaultTensorType
    option that the fused graph needs (its fused ops have no type info), so onnxruntime's quantizer is called."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    export_transformer_ort_opt(source_dir, out, sample_texts)
    quantize_dynamic(out / "model_optimized.onnx", out / "model_quantized.onnx", weight_type=QuantType.QInt8,
                     per_channel=False, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    (out / "model_optimized.onnx").unlink()


def _keep_only(out: Path, name: str):
    for path in out.glob("*.onnx"):
        if path.name != name:
            path.unlink()


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
    session = ort_session(next(out.glob("*.onnx")))
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
    session = ort_session(out / "model.onnx")
    probabilities = len(session.get_outputs()) > 1  # classifiers: (label, probabilities); ridge: (scores,)
    return OnnxPredictor(session=session, encode=lambda texts: {"text": np.array(texts, dtype=object)[:, None]},
                         outputs_probabilities=probabilities, **ctx["meta"])


EXPORTERS = {
    ("transformer", "torchscript"): export_transformer_torchscript,
    ("transformer", "torch-int8"): export_transformer_torch_int8,
    ("transformer", "onnx"): export_transformer_onnx,
    ("transformer", "ort-opt"): export_transformer_ort_opt,
    ("transformer", "onnx-int8"): export_transformer_onnx_int8,
    ("bilstm", "torchscript"): export_bilstm_torchscript,
    ("bilstm", "onnx"): export_bilstm_onnx,
    ("bilstm", "onnx-int8"): export_bilstm_onnx_int8,
    ("sklearn", "onnx"): export_sklearn_onnx,
}
LOADERS = {
    ("transformer", "torchscript"): load_transformer_torchscript,
    ("transformer", "torch-int8"): load_transformer_torchscript,
    ("transformer", "onnx"): load_transformer_onnx,
    ("transformer", "ort-opt"): load_transformer_onnx,
    ("transformer", "onnx-int8"): load_transformer_onnx,
    ("bilstm", "torchscript"): load_bilstm_torchscript,
    ("bilstm", "onnx"): load_bilstm_onnx,
    ("bilstm", "onnx-int8"): load_bilstm_onnx,
    ("sklearn", "onnx"): load_sklearn_onnx,
}
