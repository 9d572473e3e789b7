"""The teacher assistant (Mirzadeh et al. 2020): a small transformer student distilled from the teacher labels the
transfer set in the teacher's place, once it agrees with the teacher closely enough on dev text.

    [labelling]
    assistant = ""                  # "" (off) | auto | a transformer student trained on the split
    assistant_candidates = []       # the students auto tries ([] = every transformer student trained)
    assistant_agreement = 0.9       # least argmax agreement with the teacher on the validation texts
    assistant_tolerance = 1.0       # largest mean |logit - logit_teacher| there

The cached stage `assistant` (after its students, before `transfer`) exports each candidate, the named student or,
for auto, the distilled twin of every transformer-family student of the profile (or of those `assistant_candidates`
names), to the transformer family's labelling backends in the one registry (distill/families: auto's
`auto_labellers`, or the one `labelling.backend` names), runs each on the first `validation_texts` dev texts and
compares its logits with the teacher's in PyTorch (the soft labels' reference). A trial passes when both thresholds
hold. A named assistant takes its fastest passing export and is an error when none passes; auto takes the fastest
passing export of any candidate that also labels faster than the teacher's own labeller (timed on the same texts),
else the teacher labels. The stage keeps the chosen export and records every trial; `transfer` labels with it
(distill/transfer.py).
"""
from __future__ import annotations

import json
import shutil

from . import data as datasets
from . import students as student_zoo
from .atomic import write_json
from .catalogue import logits_of
from .errors import UserError
from .families.registry import FAMILIES, TEACHER_FAMILY
from .int8_onnx import CALIBRATION_TEXTS
from .labeller import Labeller
from .labelling import compare, export_and_time, timed

TRANSFORMERS = FAMILIES[TEACHER_FAMILY]
CHECKED = ("assistant", "assistant_agreement", "assistant_tolerance", "validation_texts", "batch_size", "backend")


def enabled(cfg: dict) -> bool:
    """Whether the profile asks for a teacher assistant (a run recorded before it existed does not)."""
    return bool(cfg["labelling"].get("assistant", ""))


def candidates(cfg: dict) -> list[str] | None:
    """The model ids the `assistant` stage tries (None when the profile asks for no assistant): the named one, or for
    auto the distilled twin of each transformer-family student among `students.names` and `ablation.students` (of
    those `assistant_candidates` names, when it names any). The stage's key hashes this list, not the setting."""
    if not enabled(cfg):
        return None
    choice = cfg["labelling"]["assistant"]
    if choice != "auto":
        return [choice]
    trained = dict.fromkeys([*cfg["students"]["names"], *cfg.get("ablation", {}).get("students", [])])
    chosen = cfg["labelling"].get("assistant_candidates") or []
    untrained = [n for n in chosen if n not in trained]
    if untrained:
        raise UserError(f"labelling.assistant_candidates names {', '.join(untrained)}, which this profile does not "
                        "train; add it to [students] names or take it out of assistant_candidates")
    names = [n for n in trained if not chosen or n in chosen]
    return [f"{n}-distilled" for n in names if getattr(student_zoo.REGISTRY.get(n), "family", None) == TEACHER_FAMILY]


def backends(c: dict) -> tuple[str, ...]:
    """The labelling backends a candidate is exported to: the one `labelling.backend` names, else auto's."""
    return TRANSFORMERS.auto_labellers if c["backend"] in ("auto", "torch") else (c["backend"],)


def assistant_inputs(run) -> dict:
    """What the `assistant` stage's key hashes: its checks, the candidates' stages and the teacher's logits."""
    c = run.cfg["labelling"]
    return {"labelling": {k: c[k] for k in CHECKED},
            "students": {m: run.key(f"students/{m}") for m in candidates(run.cfg)},
            "soft_labels": run.key("soft_labels"), "labeller": run.key("labeller")}


def build_assistant(run, tmp, inputs) -> dict:
    """The `assistant` stage of `run` (declared in distill/stages.py), written into `tmp`."""
    c = run.cfg["labelling"]
    dev = run.soft_labels().query("split == 'dev'").iloc[:c["validation_texts"]]
    sample, reference = dev["text"].tolist(), logits_of(dev, "dev")
    if not sample:
        raise UserError("the dev split is empty, so the teacher assistant cannot be checked; give more data")
    calibration = datasets.texts_labels(run.split(), "train")[0][:CALIBRATION_TEXTS]
    teacher = run.labeller()
    teacher(sample[:8])   # warm-up: sessions allocate on their first call
    teacher_rate = timed(teacher, sample)[1]
    trials = []
    for model_id in candidates(run.cfg):
        estimator = run.student(model_id)
        for backend in backends(c):
            trial = _trial(model_id, estimator, backend, tmp / model_id / backend, sample, reference, c, calibration)
            trials.append(trial)
            run.log(f"  assistant: {model_id} in {backend} {trial['texts_per_second']:.0f} texts/s vs the teacher's "
                    f"{teacher_rate:.0f}, agreement {trial['agreement']:.3f}, mean |Δlogit| "
                    f"{trial['mean_abs_diff']:.3f} ({'passes' if trial['passed'] else 'fails'})")
    chosen = choose(trials, teacher_rate, c, len(sample), run.log)
    _keep_only(tmp, chosen)
    write_json(tmp / "choice.json", chosen or {})
    return {"assistant": c["assistant"], "validation_texts": len(sample), "agreement_min": c["assistant_agreement"],
            "tolerance": c["assistant_tolerance"],
            "teacher": {"labeller": teacher.backend, "texts_per_second": round(teacher_rate, 1)},
            "trials": trials, "chosen": chosen}


def _trial(model_id: str, estimator, backend: str, directory, sample, reference, c: dict, calibration) -> dict:
    """Export the student `model_id` to `backend` (calibrated on `calibration`, training text), time it on `sample`
    and compare it with the teacher's logits (`reference`)."""
    logits, rate, export_seconds = export_and_time(TRANSFORMERS.labellers()[backend], estimator, directory, sample,
                                                   estimator.max_length, c["batch_size"], calibration)
    trial = {"model": model_id, "backend": backend, "texts_per_second": round(rate, 1), **compare(logits, reference),
             "export_seconds": round(export_seconds, 1), "max_length": estimator.max_length}
    trial["passed"] = bool(trial["agreement"] >= c["assistant_agreement"]
                           and trial["mean_abs_diff"] <= c["assistant_tolerance"])
    return trial


def choose(trials: list[dict], teacher_rate: float, c: dict, texts: int, log=print) -> dict | None:
    """The export that labels: the fastest that passed ({model, backend, max_length}); None when the teacher does.
    A named assistant that fails is an error; auto also needs one faster than the teacher's own labeller."""
    passed = [t for t in trials if t["passed"]]
    if c["assistant"] == "auto":
        passed = [t for t in passed if t["texts_per_second"] > teacher_rate]
        if not passed:
            log(f"  assistant: none of {len(trials)} trial(s) passes the check and labels faster than the teacher "
                f"({teacher_rate:.0f} texts/s); the teacher labels the transfer set")
            return None
    elif not passed:
        best = max(trials, key=lambda t: (t["agreement"], -t["mean_abs_diff"]))
        raise UserError(f"labelling.assistant = {c['assistant']!r} fails its check on {texts} dev texts: at best "
                        f"({best['backend']}) it agrees with the teacher on {best['agreement']:.3f} (needs "
                        f"labelling.assistant_agreement = {c['assistant_agreement']:g}) with mean |Δlogit| "
                        f"{best['mean_abs_diff']:.3g} (labelling.assistant_tolerance = {c['assistant_tolerance']:g}); "
                        "lower the thresholds, train it longer, or set labelling.assistant = \"\"")
    fastest = max(passed, key=lambda t: t["texts_per_second"])
    if fastest["texts_per_second"] <= teacher_rate:
        log(f"  assistant: {fastest['model']} labels slower than the teacher ({fastest['texts_per_second']:.0f} vs "
            f"{teacher_rate:.0f} texts/s); it labels because labelling.assistant names it")
    return {k: fastest[k] for k in ("model", "backend", "max_length")}


def _keep_only(directory, chosen: dict | None) -> None:
    """Drop every export but the chosen one: bench exports the students itself."""
    for model_dir in [p for p in directory.iterdir() if p.is_dir()]:
        for export in [p for p in model_dir.iterdir() if p.is_dir()]:
            if chosen is None or (model_dir.name, export.name) != (chosen["model"], chosen["backend"]):
                shutil.rmtree(export)
        if not any(model_dir.iterdir()):
            model_dir.rmdir()


def assistant_done(run, info) -> None:
    run.log(f"  assistant: {'the teacher labels' if info['chosen'] is None else source_line(info)}")


def source_line(info: dict) -> str:
    """Who the assistant is, in words, for stage infos and reports (`info`: the `assistant` stage's)."""
    chosen = info["chosen"]
    trial = next(t for t in info["trials"] if (t["model"], t["backend"]) == (chosen["model"], chosen["backend"]))
    return (f"teacher assistant {chosen['model']} in {chosen['backend']} (agreement {trial['agreement']:.3f}, mean "
            f"|Δlogit| {trial['mean_abs_diff']:.3f} vs the teacher on {info['validation_texts']} dev texts; "
            f"{trial['texts_per_second']:.0f} texts/s vs the teacher's {info['teacher']['texts_per_second']:.0f})")


def labeller(run) -> Labeller | None:
    """The accepted assistant as a labeller (what the transfer set is labelled with), or None: the teacher labels."""
    if not enabled(run.cfg):
        return None
    path = run.verified_dir("assistant") / "choice.json"
    try:
        chosen = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"cached artifact {path} is unreadable; run again with --rebuild-corrupt") from None
    if not chosen:
        return None
    return Labeller(chosen["backend"], path.parent / chosen["model"], None, chosen["max_length"],
                    run.cfg["labelling"]["batch_size"])

