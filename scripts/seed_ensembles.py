"""How far averaging BiLSTMs that differ only in their seed lifts a finished run's frontier (an experiment; README,
"Results on the full profile").

Trains one BiLSTM per `--seeds` on the run's training split + transfer set with the teacher's logits (the `augmented`
recipe of distill/student_stage.py, or `annealed`), scores each on dev and test, then every ensemble of the first k of
them, alone and with the run's other configured ensemble members of the same mode (`students.ensemble`), averaging
probabilities as the run's ensembles do. Accuracy only: an ensemble of k BiLSTMs costs at least k times one
BiLSTM's batch-1 time, which the run's results.csv gives.

    .venv/bin/python scripts/seed_ensembles.py --profile full --seeds 13,14,15,16,17 \\
        --out docs/results/full/experiments/seed-ensembles.csv

Needs the run's transfer set and students (`make report PROFILE=<profile>`). Each BiLSTM trains in ~40 s on the full
profile's 47k texts (2 cores).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.zoo import open_run
from distill import data as datasets
from distill.errors import one_line_errors
from distill.metrics import evaluate
from distill.pipeline import logits_of
from distill.student_stage import student_params, train


def train_bilstm(run, seed: int, mode: str):
    """A BiLSTM as the run's `bilstm-<mode>` stage trains it (distill/student_stage.py), with its seed replaced."""
    return train(run, "bilstm", mode, {**student_params(run, "bilstm", mode), "seed": seed})[0]


def scores(proba: dict, gold: dict, teacher_accuracy: float) -> dict:
    test = evaluate(gold["test"], proba["test"])
    return {"dev_accuracy": round(float(np.mean(proba["dev"].argmax(1) == gold["dev"])), 4),
            "test_accuracy": round(test["accuracy"], 4), "ci_low": round(test["ci_low"], 4),
            "ci_high": round(test["ci_high"], 4), "of_teacher": round(test["accuracy"] / teacher_accuracy, 4)}


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="full", help="the finished run to use (default: full)")
    p.add_argument("--seeds", default="13,14,15,16,17", help="comma-separated BiLSTM seeds (13 is the run's own)")
    p.add_argument("--mode", choices=["augmented", "annealed"], default="augmented")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--out", type=Path, help="write the table as CSV here too")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    run = open_run(args.profile, args.artifacts)
    split = run.split()
    texts = {part: datasets.texts_labels(split, part)[0] for part in ("dev", "test")}
    gold = {part: datasets.texts_labels(split, part)[1] for part in ("dev", "test")}
    teacher_accuracy = float(np.mean(logits_of(run.soft_labels(), "test").argmax(1) == gold["test"]))
    others = [n for n in run.cfg["students"].get("ensemble", []) if n != "bilstm"]
    other_proba = {n: {part: run.student(f"{n}-{args.mode}").predict_proba(texts[part]) for part in texts}
                   for n in others}

    rows, members = [], []
    for seed in seeds:
        started = time.time()
        est = train_bilstm(run, seed, args.mode)
        members.append({part: est.predict_proba(texts[part]) for part in texts})
        print(f"bilstm seed {seed}: trained in {time.time() - started:.0f}s")
        rows.append({"model": f"bilstm seed {seed}", "bilstms": 1, "others": "",
                     **scores(members[-1], gold, teacher_accuracy)})
        k = len(members)
        if k > 1:
            mean = {part: np.mean([m[part] for m in members], axis=0) for part in texts}
            rows.append({"model": f"{k} bilstms (seeds {seeds[0]}..{seed})", "bilstms": k, "others": "",
                         **scores(mean, gold, teacher_accuracy)})
        if others:
            with_others = {part: np.mean([*(m[part] for m in members), *(other_proba[n][part] for n in others)],
                                         axis=0) for part in texts}
            rows.append({"model": f"{k} bilstm(s) + {'+'.join(others)}", "bilstms": k, "others": "+".join(others),
                         **scores(with_others, gold, teacher_accuracy)})
    table = pd.DataFrame(rows)
    print(f"\n{args.profile}, {args.mode}: teacher test accuracy {teacher_accuracy:.4f}; "
          f"97% of it is {0.97 * teacher_accuracy:.4f}")
    print(tabulate(table, headers="keys", tablefmt="github", showindex=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.assign(teacher_accuracy=round(teacher_accuracy, 4), mode=args.mode).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
