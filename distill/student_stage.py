"""The student stage, `students/<student>-<mode>`: one builder for every training mode.

    baseline   gold labels of the training split
    distilled  the teacher's logits on the training split (gold labels beside them, for `loss="mix"`)
    augmented  the teacher's logits on the training split + the transfer set (`make ablation`)
    annealed   the same, with teacher annealing (Clark et al. 2019; distill/ablation.py says how)

Settings in [ablation.<student>] override [students.<student>] for the students trained on the transfer set.
"""
from __future__ import annotations

import time

import joblib
import numpy as np

from . import data as datasets
from . import students as student_zoo
from .atomic import atomic_path
from .catalogue import TRANSFER_MODES, logits_of
from .config import fingerprint
from .errors import UserError
from .metrics import count_params


def student_inputs(run, name: str, mode: str) -> dict:
    """What the key of `students/<name>-<mode>` hashes: the student's settings and the stages it learns from."""
    params = student_params(run, name, mode)
    inputs = {"student": name, "mode": mode, "params": params, "data": run.key("data"),
              "soft_labels": None if mode == "baseline" else run.key("soft_labels"),
              "code": getattr(student_zoo.REGISTRY[name], "code_version", 1)}
    if mode in TRANSFER_MODES:
        inputs["transfer"] = run.key("transfer")
    if student_zoo.needs_teacher(name, params):
        inputs["teacher"] = run.key("teacher")
    files = student_zoo.outside_files(name, params)
    if files:   # only then, so the keys of students that read no outside file stay what they were
        inputs["files"] = files
    return inputs


def build_student(run, tmp, inputs, mix=None) -> dict:
    """The stage's build. A student that takes a `checkpoint` saves its fit in the stage's partial directory, so an
    interrupted build resumes there (the transformers on the transfer set train for hours on 2 cores)."""
    name, mode = inputs["student"], inputs["mode"]
    stage, checkpoint = f"students/{name}-{mode}", None
    if "checkpoint" in getattr(student_zoo.REGISTRY[name], "fit_extras", ()):
        checkpoint = run.partial_dir(stage, fingerprint(inputs)) / "checkpoint.pt"
    try:
        est, info = train(run, name, mode, inputs["params"], mix, checkpoint=checkpoint)
    except BaseException:
        if checkpoint is not None and not checkpoint.exists():   # nothing to resume: leave no trace
            run.store.remove_partial(stage)
        raise
    with atomic_path(tmp / "model.joblib") as path:
        joblib.dump(est, path)
    return info


def student_params(run, name: str, mode: str) -> dict:
    params = dict(run.cfg["students"].get(name, {}))
    overrides = run.cfg["ablation"].get(name)
    if mode in TRANSFER_MODES and isinstance(overrides, dict):   # [ablation] born_again is its on/off switch
        params.update(overrides)
    return {**params, **student_extras(run)}


def student_extras(run) -> dict:
    """What the run's choices add to every student's parameters: `class_weights` when `[students] class_weight`
    asks for them, and the `dev_metric` early stopping follows when `[eval] metric` is not accuracy; {} by default,
    so the stage key of a student stays what it was."""
    extra = {}
    scheme = run.cfg["students"].get("class_weight", "none")
    if scheme not in ("", "none"):
        gold = datasets.texts_labels(run.split(), "train")[1]
        extra["class_weights"] = class_weights(gold, len(run.labels()), scheme)
    if run.cfg["eval"].get("metric", "accuracy") != "accuracy":
        extra["dev_metric"] = run.metric()
    return extra


def train(run, name: str, mode: str, params: dict, mix=None, checkpoint=None):
    """Student `name` with `params`, fitted as the stage `students/<name>-<mode>` fits it. `mix(targets, reference)`
    anneals a student that cannot follow a schedule (`annealed` only); `checkpoint`: where a student that can saves
    its fit to resume it. Returns (estimator, stage info)."""
    texts, targets, hard_labels = training_data(run, mode)
    est = new_student(run, name, params)
    info = {"train_texts": len(texts), "annealing": "none"} if mode in TRANSFER_MODES else {}
    if mode == "annealed":
        targets, info["annealing"] = anneal(est, targets, hard_labels, mix)
    seconds = fit_student(run, est, texts, targets, hard_labels, checkpoint)
    if getattr(est, "resumed_from_", None) is not None:
        info["resumed_from_step"] = est.resumed_from_
        run.log(f"  students/{name}-{mode}: resumed from its checkpoint at step {est.resumed_from_}")
    return est, {"train_seconds": round(seconds, 2), "params": count_params(est), **info}


def training_data(run, mode: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(texts, targets, hard labels) a student of `mode` learns from. On the transfer set, a text's hard label is
    the teacher's own decision: it has no gold label."""
    texts, gold = datasets.texts_labels(run.split(), "train")
    if mode == "baseline":
        return texts, gold, None
    teacher = logits_of(run.soft_labels(), "train")
    if mode not in TRANSFER_MODES:
        return texts, teacher, gold
    transfer = run.transfer_set()
    extra = transfer[[c for c in transfer.columns if c.startswith("logit_")]].to_numpy(np.float32)
    return (texts + transfer["text"].tolist(), np.concatenate([teacher, extra]),
            np.concatenate([gold, extra.argmax(1)]))


def anneal(est, targets, reference, mix):
    """Students trained step by step anneal for real; any other is fitted to the schedule's average target
    (`mix`). Returns (targets, how)."""
    if "anneal" in est.get_params():
        est.set_params(anneal=True)
        return targets, "schedule lambda = step / total"
    if mix is None:
        raise UserError("an annealed student that cannot follow a schedule needs the ablation's target mix; "
                        "build it with `mbtb ablation`")
    return mix(targets, reference), "fixed 0.5 teacher + 0.5 gold mix (schedule average)"


def new_student(run, name: str, params: dict):
    """An unfitted student; one initialised from the teacher (transformer, static, ...) is pointed at it, and one
    that caches work on it between processes (the teacher's Model2Vec table) at artifacts/<profile>/.cache."""
    est = student_zoo.build(name, {**params, "progress": run.progress})
    if student_zoo.needs_teacher(name, params):
        est.set_params(teacher=str(run.teacher_dir()))
        if "memory" in est.get_params():
            est.set_params(memory=str(run.dir / ".cache"))
    return est


def fit_student(run, est, texts, targets, hard_labels=None, checkpoint=None) -> float:
    """Fit, passing the dev split, gold labels and a checkpoint path to students whose `fit` takes them
    (`fit_extras`). Returns seconds."""
    accepts = getattr(est, "fit_extras", ())
    fit_kwargs = {}
    if "eval_set" in accepts:
        fit_kwargs["eval_set"] = datasets.texts_labels(run.split(), "dev")
    if hard_labels is not None and "hard_labels" in accepts:
        fit_kwargs["hard_labels"] = hard_labels
    if checkpoint is not None and "checkpoint" in accepts:
        fit_kwargs["checkpoint"] = checkpoint
    started = time.time()
    est.fit(texts, targets, **fit_kwargs)
    return time.time() - started


def class_weights(gold, num_classes: int, scheme: str | None) -> list[float] | None:
    """Per-class loss weights: None for "none", n / (k * count) for "balanced" (scikit-learn's formula)."""
    if scheme in (None, "", "none"):
        return None
    if scheme != "balanced":
        raise UserError(f"class_weight must be \"none\" or \"balanced\", not {scheme!r}")
    counts = np.bincount(np.asarray(gold, dtype=int), minlength=num_classes).astype(float)
    return [float(w) for w in len(gold) / (num_classes * np.maximum(counts, 1))]
