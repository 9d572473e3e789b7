"""The built-in families: the teacher and transformer students, the BiLSTM and the word CNN, the TF-IDF linear
students, static embeddings, and ensembles of any of them. A student class names its family in a class attribute
(`family = "bilstm"`); the teacher is a `transformer`. Adding a student to every stage (export, validation, bench,
report, serve) is its class plus one `register(Family(...))`; adding a backend, docs/add-a-backend.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..teacher_onnx import OnnxLogits
from . import exporters as X
from .predictor import BiLSTMPredictor, EnsemblePredictor, Predictor, SklearnPredictor, StaticPredictor, \
    TransformerPredictor
from .registry import FAMILIES, INT8, Backend, Family, family_of, native_predictor, register


def _ensemble(estimator, **meta) -> Predictor:
    labels = meta["labels"]
    members = [native_predictor(name, est, labels=labels, kind=meta.get("kind", "")) for name, est in
               estimator.estimators_]
    return EnsemblePredictor(members=members, **meta)


def _transformer_student(estimator, **meta) -> Predictor:
    return TransformerPredictor(tokenizer=estimator.tokenizer_, module=estimator.module_.eval(),
                                max_length=estimator.max_length, **meta)


register(Family(
    "transformer", "transformer", "torch", _transformer_student, marker="*", fastest_lossless="ort-opt",
    backends={b.name: b for b in [
        Backend("torchscript", X.export_transformer_torchscript, X.load_transformer_torchscript),
        # version 2: per-channel weights and outlier channels in fp32, calibrated on training text (docs/int8.md)
        Backend("torch-int8", X.export_transformer_torch_int8, X.load_transformer_torchscript, INT8, lossy=True,
                version=2),
        Backend("onnx", X.export_transformer_onnx, X.load_transformer_onnx, logits=OnnxLogits),
        Backend("ort-opt", X.export_transformer_ort_opt, X.load_transformer_onnx, logits=OnnxLogits,
                auto_labeller=True),
        Backend("onnx-int8", X.export_transformer_onnx_int8, X.load_transformer_onnx, INT8, lossy=True,
                logits=OnnxLogits, version=2, auto_labeller=True),
    ]}))


def _word_ids_family(name: str, label: str, marker: str) -> Family:
    """A torch network over word ids (the BiLSTM, the word CNN): one predictor, one set of exports."""
    return Family(
        name, label, "torch", lambda est, **meta: BiLSTMPredictor(estimator=est, module=est.module_.eval(), **meta),
        marker=marker, fastest_lossless="onnx", backends={b.name: b for b in [
            Backend("torchscript", X.export_bilstm_torchscript, X.load_bilstm_torchscript),
            Backend("onnx", X.export_bilstm_onnx, X.load_bilstm_onnx),
            Backend("onnx-int8", X.export_bilstm_onnx_int8, X.load_bilstm_onnx, INT8, lossy=True),
        ]})


register(_word_ids_family("bilstm", "BiLSTM", marker="s"))
register(_word_ids_family("cnn", "word CNN", marker="v"))
register(Family(
    "sklearn", "TF-IDF linear", "sklearn", lambda est, **meta: SklearnPredictor(estimator=est, **meta),
    marker="o", fastest_lossless="numpy", backends={b.name: b for b in [
        # ORT's tokenizer is ASCII-only (re2's \w): "café" becomes "caf", so a sentence with an accented word scores
        # differently (up to 0.023 seen on a tiny run); ASCII text agrees within 1e-5 (tests/test_bench_export.py).
        Backend("onnx", X.export_sklearn_onnx, X.load_sklearn_onnx, 0.05),
        Backend("numpy", X.export_linear_numpy, X.load_linear_numpy, 1e-6),
    ]}))
register(Family(
    "static", "static embeddings (Model2Vec)", "numpy",
    lambda est, **meta: StaticPredictor(estimator=est, **meta), marker="P", backends={b.name: b for b in [
        Backend("onnx", X.export_static_onnx, X.load_static_onnx),
    ]}))


# --- ensembles: the members in their fastest lossless exports ------------------------------------------------------
# Natively an ensemble runs each member as it was trained (a TF-IDF student in scikit-learn, 1-2 ms of per-call
# overhead; the BiLSTM in PyTorch eager), which costs it most of its speed. Its `exported` variant holds each
# member's own export in the member family's `fastest_lossless` backend, so it averages the same probabilities.

def _member_backend(estimator) -> str:
    family = family_of(estimator)
    return family.fastest_lossless or family.native_backend


def export_ensemble_exported(estimator, out, sample_texts):
    members = []
    for name, member in estimator.estimators_:
        family, backend = family_of(member), _member_backend(member)
        if backend != family.native_backend:
            (Path(out) / name).mkdir()
            family.backends[backend].export(member, Path(out) / name, sample_texts)
        members.append({"model": name, "family": family.name, "backend": backend})
    (Path(out) / "members.json").write_text(json.dumps(members, indent=1))


def load_ensemble_exported(out, ctx):
    listed = json.loads((Path(out) / "members.json").read_text())
    fitted = dict(ctx["source"].estimators_)   # the export's key holds its members' keys: the same students
    # Members carry the ensemble's kind, as in `_ensemble`: only the ensemble itself is listed and compared.
    labels, kind, members = ctx["meta"]["labels"], ctx["meta"].get("kind", ""), []
    for m in listed:
        member, family = fitted[m["model"]], FAMILIES[m["family"]]
        if m["backend"] == family.native_backend:
            members.append(native_predictor(m["model"], member, labels=labels, kind=kind))
            continue
        member_ctx = {**ctx, "source": member, "max_length": getattr(member, "max_length", None) or ctx["max_length"],
                      "meta": {"model": m["model"], "backend": m["backend"], "labels": labels, "kind": kind}}
        members.append(family.backends[m["backend"]].load(Path(out) / m["model"], member_ctx))
    return EnsemblePredictor(members=members, **ctx["meta"])


register(Family("ensemble", "ensemble", "native", _ensemble, marker="D", backends={
    "exported": Backend("exported", export_ensemble_exported, load_ensemble_exported)}))
