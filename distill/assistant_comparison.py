"""What the teacher assistant (distill/assistant.py) costs a student: one cheap student trained on the assistant's
labels against the same student trained on the teacher's, on the same texts.

The stage `assistant_comparison` (`mbtb ablation`, when `[labelling] assistant` is set and `assistant_compare` > 0)
takes the first `assistant_compare` texts of the transfer set, which the assistant labelled, and labels them with the
teacher's labeller too. The student `assistant_compare_student` is trained twice on the training split (the teacher's
logits) plus those texts, with the teacher's logits on them and with the assistant's (same seed, the settings of its
augmented mode), and both are scored on the test split: the difference, assistant minus teacher, with its paired
bootstrap 95% CI (the run's metric). `write_report` puts it in reports/<run>/assistant.json beside the assistant's
check and the transfer set.
"""
from __future__ import annotations

import numpy as np

from . import assistant, labelling
from . import data as datasets
from . import students as student_zoo
from .atomic import write_json
from .config import fingerprint
from .student_stage import fit_student, new_student, student_params, training_data
from .transfer import labelled_by


def comparison_inputs(run) -> dict:
    """What the stage's key hashes: the texts compared, the student and its settings, and the stages it reads."""
    c = run.cfg["labelling"]
    name = c["assistant_compare_student"]
    params = student_params(run, name, "augmented")
    inputs = {"texts": c["assistant_compare"], "student": name, "params": params,
              "code": getattr(student_zoo.REGISTRY[name], "code_version", 1), "transfer": run.key("transfer"),
              "labeller": run.key("labeller"), "soft_labels": run.key("soft_labels"), "eval": run.cfg["eval"]}
    if student_zoo.needs_teacher(name, params):
        inputs["teacher"] = run.key("teacher")
    return inputs


def build_comparison(run, tmp, inputs) -> dict:
    """The `assistant_comparison` stage of `run`, written into `tmp`."""
    if run.stage_info("transfer").get("labelled_by", {"model": "teacher"})["model"] == "teacher":
        return {"skipped": "the teacher labelled the transfer set: there is no assistant to compare"}
    transfer = run.transfer_set().iloc[:inputs["texts"]]
    texts = transfer["text"].tolist()
    by_assistant = transfer[[c for c in transfer.columns if c.startswith("logit_")]].to_numpy(np.float32)
    by_teacher = labelling.label_texts(run, run.labeller(), texts, "assistant_comparison", fingerprint(inputs),
                                       run.cfg["transfer"]["chunk_size"])
    test_texts, gold = datasets.texts_labels(run.split(), "test")
    predictions, seconds = {}, {}
    for who, logits in (("teacher", by_teacher.logits), ("assistant", by_assistant)):
        estimator, seconds[who] = _trained(run, inputs, texts, logits)
        predictions[who] = np.asarray(estimator.predict_proba(test_texts)).argmax(1)
    np.savez(tmp / "test_predictions.npz", **predictions)
    c, metric = run.cfg["eval"], run.metric()
    difference, low, high = metric.difference_ci(gold, predictions["assistant"], predictions["teacher"],
                                                 c["bootstrap"], c["seed"])
    agreement = labelling.compare(by_assistant, by_teacher.logits)
    return {"student": inputs["student"], "texts": len(texts), "metric": metric.spec,
            "teacher_labelled": metric(gold, predictions["teacher"]),
            "assistant_labelled": metric(gold, predictions["assistant"]),
            "difference": difference, "ci_low": low, "ci_high": high, "test_examples": len(gold),
            "label_agreement": agreement["agreement"], "label_mean_abs_diff": agreement["mean_abs_diff"],
            "teacher_label_seconds": round(by_teacher.seconds, 2),
            "train_seconds": {who: round(s, 2) for who, s in seconds.items()}}


def _trained(run, inputs, texts: list[str], logits: np.ndarray):
    """The compared student fitted on the training split plus `texts` labelled with `logits`: (estimator, seconds)."""
    train_texts, targets, gold = training_data(run, "distilled")
    estimator = new_student(run, inputs["student"], inputs["params"])
    seconds = fit_student(run, estimator, train_texts + texts, np.concatenate([targets, logits]),
                          np.concatenate([gold, logits.argmax(1)]))
    return estimator, seconds


def comparison_done(run, info) -> None:
    run.log(f"  assistant comparison: {sentence(info)}")


def sentence(info: dict) -> str:
    """The comparison in words, for the log and the ablation report."""
    if "skipped" in info:
        return f"skipped ({info['skipped']})"
    return (f"{info['student']} on train + {info['texts']:,} transfer texts labelled by the assistant "
            f"{info['assistant_labelled']:.4f} vs by the teacher {info['teacher_labelled']:.4f} ({info['metric']} "
            f"on {info['test_examples']:,} test examples): {info['difference']:+.4f} [{info['ci_low']:+.4f}, "
            f"{info['ci_high']:+.4f}] (paired bootstrap 95% CI); the two label the texts alike on "
            f"{info['label_agreement']:.3f}")


def wanted(cfg: dict) -> bool:
    """Whether `mbtb ablation` builds the comparison: an assistant is asked for, and texts to compare on."""
    return assistant.enabled(cfg) and cfg["labelling"]["assistant_compare"] > 0


def write_report(run) -> None:
    """reports/<run>/assistant.json: the assistant's check, who labelled the transfer set and how fast, and the
    paired comparison when it is wanted (built by then)."""
    transfer = run.stage_info("transfer")
    comparison = run.stage_info("assistant_comparison") if wanted(run.cfg) else None
    write_json(run.reports / "assistant.json", {
        "profile": run.profile, "assistant": run.stage_info("assistant"),
        "transfer": {k: transfer.get(k) for k in ("rows", "augmented", "unlabelled", "label_seconds",
                                                  "texts_per_second", "engine", "logits_source", "labelled_by")},
        "transfer_labelled_by": labelled_by(transfer), "comparison": comparison})
