"""Every model of a profile's run as Predictors: the native ones here, the exported variants via bench.export."""
from __future__ import annotations

import json
from pathlib import Path

from distill.config import load_profile
from distill.errors import UserError
from distill.pipeline import Run
from distill.students import AveragingEnsemble, BiLSTMClassifier

from .predictor import BiLSTMPredictor, EnsemblePredictor, SklearnPredictor, TransformerPredictor


def open_run(profile: str, artifacts="artifacts", reports="reports") -> Run:
    """The Run of `profile` with the configuration it was made with (overrides included), saved in run.json;
    configs/<profile>.toml when the run has not started yet."""
    saved = Path(artifacts) / profile / "run.json"
    cfg = None
    if saved.exists():
        try:
            cfg = json.loads(saved.read_text())["config"]
        except (OSError, ValueError, KeyError):
            raise UserError(f"{saved} is unreadable; delete it and rerun `make distill PROFILE={profile}`") from None
    return Run(profile, cfg or load_profile(profile), artifacts, reports, progress=False, log=lambda *_: None)


def kind_of(model_id: str) -> str:
    if model_id == "teacher":
        return "teacher"
    if model_id.startswith("ensemble-"):
        return "ensemble"
    return model_id.rsplit("-", 1)[-1]


def student_predictor(model_id: str, estimator, labels) -> object:
    if isinstance(estimator, BiLSTMClassifier):
        return BiLSTMPredictor(model_id, "torch", labels, kind_of(model_id), estimator=estimator,
                               module=estimator.module_.eval())
    if isinstance(estimator, AveragingEnsemble):
        members = [student_predictor(n, e, labels) for n, e in estimator.estimators_]
        return EnsemblePredictor(model_id, "native", labels, "ensemble", members=members)
    return SklearnPredictor(model_id, "sklearn", labels, kind_of(model_id), estimator=estimator)


def teacher_predictor(run: Run, device: str = "cpu") -> TransformerPredictor:
    from distill.teacher import load_pretrained
    tokenizer, model = load_pretrained(str(run.teacher_dir()))
    model.eval().to(device)
    return TransformerPredictor("teacher", "torch" if device == "cpu" else "torch-cuda", run.labels(), "teacher",
                                tokenizer=tokenizer, module=model, max_length=run.cfg["teacher"]["max_length"],
                                device=device)


def native_predictors(run: Run) -> list:
    """Teacher (PyTorch eager), every student in its training framework, and the ensembles of the evaluation."""
    labels = run.labels()
    preds = [teacher_predictor(run)]
    students = {model_id: run.student(model_id) for model_id in run.student_names()}
    preds += [student_predictor(model_id, est, labels) for model_id, est in students.items()]
    for mode in run.cfg["students"]["modes"]:
        members = [(f"{n}-{mode}", students[f"{n}-{mode}"]) for n in run.cfg["students"].get("ensemble", [])
                   if f"{n}-{mode}" in students]
        if len(members) >= 2:
            preds.append(student_predictor(f"ensemble-{mode}", AveragingEnsemble.from_fitted(members), labels))
    return preds
