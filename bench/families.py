"""One table of model families: how each is served natively, which backends it exports to, how an export is loaded
back, and how far an export may drift from its source before it is marked failed.

A student class names its family in a class attribute (`family = "bilstm"`); the teacher is a `transformer`. Adding
a student to every stage (export, validation, bench, report, serve) is its class plus one `register(Family(...))`.
Modelled on optimum's exporters, which register each architecture once with its validation tolerance.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distill.errors import UserError
from distill.pipeline import kind_of

from . import exporters as X
from .predictor import (BiLSTMPredictor, EnsemblePredictor, Predictor, SklearnPredictor, StaticPredictor,
                        TransformerPredictor)

FP32 = 1e-4    # max |p - p_source| of an fp32 export on the validation sentences
INT8 = 0.35    # dynamic int8 moves probabilities; what it costs in accuracy is scored and reported separately


@dataclass(frozen=True)
class Backend:
    """An exported form of a family: `export(source, out_dir, sample_texts)` writes the files,
    `load(out_dir, ctx) -> Predictor` reads them back, `tolerance` bounds the validation drift. A `lossy` backend
    (int8) past its tolerance is kept when it still agrees with its source on most labels (bench/export.py
    `check_drift`): that is quantisation loss, which its accuracy shows, not a broken export."""
    name: str
    export: Callable
    load: Callable
    tolerance: float = FP32
    lossy: bool = False


@dataclass(frozen=True)
class Family:
    name: str
    title: str                                   # as the report's legend names it
    native_backend: str                          # the backend of the fitted estimator itself
    native: Callable[..., Predictor]             # native(estimator, **meta) -> Predictor
    backends: dict[str, Backend] = field(default_factory=dict)
    marker: str = "o"                            # matplotlib marker on the Pareto plot
    # The lossless backend this family runs fastest in at batch 1 (measured here, docs/results/): an ensemble's
    # `exported` variant runs its members in it. "" = the native one is fastest.
    fastest_lossless: str = ""


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def family_of(estimator) -> Family:
    """The family of a fitted student (`None` is the teacher)."""
    name = "transformer" if estimator is None else getattr(estimator, "family", None)
    if name not in FAMILIES:
        raise UserError(f"{type(estimator).__name__} declares no registered family ({name!r}); set its `family` "
                        f"attribute to one of {', '.join(FAMILIES)} or register one in bench/families.py")
    return FAMILIES[name]


def native_predictor(model_id: str, estimator, **meta) -> Predictor:
    """A student (or ensemble) served as it was trained."""
    family = family_of(estimator)
    return family.native(estimator, model=model_id, backend=family.native_backend, **meta)


def _ensemble(estimator, **meta) -> Predictor:
    labels = meta["labels"]
    members = [native_predictor(name, est, labels=labels, kind=meta.get("kind", "")) for name, est in
               estimator.estimators_]
    return EnsemblePredictor(members=members, **meta)


def _transformer_student(estimator, **meta) -> Predictor:
    return TransformerPredictor(tokenizer=estimator.tokenizer_, module=estimator.module_.eval(),
                                max_length=estimator.max_length, **meta)


register(Family(
    "transformer", "transformer", "torch", _transformer_student, marker="*", fastest_lossless="ort-opt", backends={
        b.name: b for b in [
            Backend("torchscript", X.export_transformer_torchscript, X.load_transformer_torchscript),
            Backend("torch-int8", X.export_transformer_torch_int8, X.load_transformer_torchscript, INT8, lossy=True),
            Backend("onnx", X.export_transformer_onnx, X.load_transformer_onnx),
            Backend("ort-opt", X.export_transformer_ort_opt, X.load_transformer_onnx),
            Backend("onnx-int8", X.export_transformer_onnx_int8, X.load_transformer_onnx, INT8, lossy=True),
        ]}))
register(Family(
    "bilstm", "BiLSTM", "torch", lambda est, **meta: BiLSTMPredictor(estimator=est, module=est.module_.eval(), **meta),
    marker="s", fastest_lossless="onnx", backends={b.name: b for b in [
        Backend("torchscript", X.export_bilstm_torchscript, X.load_bilstm_torchscript),
        Backend("onnx", X.export_bilstm_onnx, X.load_bilstm_onnx),
        Backend("onnx-int8", X.export_bilstm_onnx_int8, X.load_bilstm_onnx, INT8, lossy=True),
    ]}))
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
    labels, members = ctx["meta"]["labels"], []
    for m in listed:
        member, family = fitted[m["model"]], FAMILIES[m["family"]]
        if m["backend"] == family.native_backend:
            members.append(native_predictor(m["model"], member, labels=labels, kind=kind_of(m["model"])))
            continue
        member_ctx = {**ctx, "source": member, "max_length": getattr(member, "max_length", None) or ctx["max_length"],
                      "meta": {"model": m["model"], "backend": m["backend"], "labels": labels,
                               "kind": kind_of(m["model"])}}
        members.append(family.backends[m["backend"]].load(Path(out) / m["model"], member_ctx))
    return EnsemblePredictor(members=members, **ctx["meta"])


register(Family("ensemble", "ensemble", "native", _ensemble, marker="D", backends={
    "exported": Backend("exported", export_ensemble_exported, load_ensemble_exported)}))
