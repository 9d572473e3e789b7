"""Which members make the best ensemble of a finished run's students (an experiment; the full profile's notes).

Scores each listed ensemble of the run's `<student>-<mode>` students on dev and test, averaging probabilities as the
run's ensembles do, and each against the first one listed with a paired 95% CI on test. Accuracy only: an ensemble
costs about the sum of its members' batch-1 times, which the run's bench.json gives.

    .venv/bin/python scripts/member_ensembles.py --profile full --ensemble tfidf_lr+nb+bilstm \\
        --ensemble tfidf_lr+nb+bilstm+cnn --ensemble cnn --out docs/results/full/experiments/cnn-ensembles.csv

Needs the members' stages (e.g. `mbtb ablation --profile full` with them in [ablation] students).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.zoo import open_run
from distill import data as datasets
from distill.ablation import paired_gain_ci
from distill.errors import UserError, one_line_errors
from distill.metrics import bootstrap_ci


def scores(correct: np.ndarray, reference: np.ndarray | None) -> dict:
    low, high = bootstrap_ci(correct)
    row = {"accuracy": round(float(correct.mean()), 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}
    if reference is not None:
        gain_low, gain_high = paired_gain_ci(correct, reference)
        row.update(gain=round(float(correct.mean() - reference.mean()), 4), gain_ci_low=round(gain_low, 4),
                   gain_ci_high=round(gain_high, 4))
    return row


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="full", help="the finished run to use (default: full)")
    p.add_argument("--ensemble", action="append", required=True,
                   help="members joined by +, e.g. tfidf_lr+nb+bilstm (repeat; the first is the reference)")
    p.add_argument("--mode", choices=["baseline", "distilled", "augmented", "annealed"], default="augmented")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--out", type=Path, help="write the table as CSV here too")
    args = p.parse_args(argv)
    ensembles = [e.split("+") for e in args.ensemble]

    run = open_run(args.profile, args.artifacts)
    split = run.split()
    rows = []
    for part in ("dev", "test"):
        texts, gold = datasets.texts_labels(split, part)
        proba = {}
        for name in sorted({m for members in ensembles for m in members}):
            try:
                proba[name] = run.student(f"{name}-{args.mode}").predict_proba(texts)
            except UserError as e:
                raise UserError(f"{name}-{args.mode}: {e}") from None
        correct = [np.mean([proba[m] for m in members], axis=0).argmax(1) == gold for members in ensembles]
        for i, members in enumerate(ensembles):
            rows.append({"split": part, "members": "+".join(members), "mode": args.mode,
                         **scores(correct[i], correct[0] if part == "test" and i else None)})
    table = pd.DataFrame(rows)
    print(f"{args.profile}: ensembles of {args.mode} students; gains on test against {args.ensemble[0]}, paired")
    printable = table.astype(object).where(table.notna(), None)   # no gain for the reference and on dev
    print(tabulate(printable, headers="keys", tablefmt="github", showindex=False, missingval=""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
