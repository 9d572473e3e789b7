"""The `evaluation` stage: teacher, spine students and their ensembles scored on the test split, keyed by every model
it scores; once built or found cached, its table is written to reports/<run>/accuracy.csv and accuracy.json."""
from __future__ import annotations

import json

import pandas as pd

from . import data as datasets
from .atomic import atomic_path, write_json
from .catalogue import MODES, logits_of, parse_model_id
from .environment import environment
from .metrics import count_params, evaluate


def evaluation_inputs(run) -> dict:
    names = [f"students/{m}" for m in run.student_names()]
    return {"eval": run.cfg["eval"], "ensemble": run.cfg["students"].get("ensemble", []),
            "models": {name: run.key(name) for name in ["data", "soft_labels", "teacher", *names]}}


def build_evaluation(run, tmp, inputs) -> dict:
    score(run).to_csv(tmp / "accuracy.csv", index=False)
    return {}


def evaluation_done(run, info) -> pd.DataFrame:
    table = pd.read_csv(run.dir / "evaluation" / "accuracy.csv")
    run.reports.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.reports / "accuracy.csv") as path:
        table.to_csv(path, index=False, float_format="%.4f")
    write_json(run.reports / "accuracy.json", {
        "profile": run.profile, "config": run.cfg, "environment": environment(),
        "test_examples": int((run.split()["split"] == "test").sum()),
        "rows": json.loads(table.to_json(orient="records")),
    })
    return table


def score(run) -> pd.DataFrame:
    c = run.cfg["eval"]
    texts, gold = datasets.texts_labels(run.split(), "test")
    teacher_logits = logits_of(run.soft_labels(), "test")
    teacher_pred = teacher_logits.argmax(1)
    teacher_info = run.store.meta("teacher")["info"]
    metric = run.metric()
    rows = [{"model": "teacher", "kind": "teacher", **evaluate(gold, teacher_logits, teacher_pred,
                                                                 c["bootstrap"], c["seed"], metric),
             "params": teacher_info["params"], "train_seconds": teacher_info["train_seconds"]}]
    for model_id, est in run.models(MODES).items():
        if est is None:
            continue
        members = run.ensemble_members(model_id)
        infos = [run.stage_info(f"students/{m}") for m in members or [model_id]]
        row = {"model": model_id, "kind": parse_model_id(model_id).kind,
               **evaluate(gold, est.predict_proba(texts), teacher_pred, c["bootstrap"], c["seed"], metric),
               "params": count_params(est) if members else infos[0]["params"],
               "train_seconds": sum(i["train_seconds"] for i in infos)}
        if members:
            row["members"] = "+".join(members)
        rows.append(row)
    return pd.DataFrame(rows)
