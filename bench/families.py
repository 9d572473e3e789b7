"""One table of model families: how each is served natively, which backends it exports to, how an export is loaded
back, and how far an export may drift from its source before it is marked failed.

A student class names its family in a class attribute (`family = "bilstm"`); the teacher is a `transformer`. Adding
a student to every stage (export, validation, bench, report, serve) is its class plus one `register(Family(...))`.
Modelled on optimum's exporters, which register each architecture once with its validation tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from distill.errors import UserError

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
    "transformer", "transformer", "torch", _transformer_student, marker="*", backends={
        b.name: b for b in [
            Backend("torchscript", X.export_transformer_torchscript, X.load_transformer_torchscript),
            Backend("torch-int8", X.export_transformer_torch_int8, X.load_transformer_torchscript, INT8, lossy=True),
            Backend("onnx", X.export_transformer_onnx, X.load_transformer_onnx),
            Backend("ort-opt", X.export_transformer_ort_opt, X.load_transformer_onnx),
            Backend("onnx-int8", X.export_transformer_onnx_int8, X.load_transformer_onnx, INT8, lossy=True),
        ]}))
register(Family(
    "bilstm", "BiLSTM", "torch", lambda est, **meta: BiLSTMPredictor(estimator=est, module=est.module_.eval(), **meta),
    marker="s", backends={b.name: b for b in [
        Backend("torchscript", X.export_bilstm_torchscript, X.load_bilstm_torchscript),
        Backend("onnx", X.export_bilstm_onnx, X.load_bilstm_onnx),
        Backend("onnx-int8", X.export_bilstm_onnx_int8, X.load_bilstm_onnx, INT8, lossy=True),
    ]}))
register(Family(
    "sklearn", "TF-IDF linear", "sklearn", lambda est, **meta: SklearnPredictor(estimator=est, **meta),
    marker="o", backends={b.name: b for b in [
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
register(Family("ensemble", "ensemble", "native", _ensemble, marker="D"))
