"""Which ingredient of distillation pays: for each student, hard labels vs. soft targets vs. soft targets on the
augmented transfer set vs. that plus teacher annealing, each scored by the run's metric (`[eval] metric`) with its
bootstrap 95% CI on the test split, and its gain over the hard-label twin with a paired bootstrap 95% CI.

    python -m distill.ablation --profile smoke      -> reports/<profile>/ablation.csv and ablation.md

Variants and their cached stages (artifacts/<profile>/students/<student>-<stage>):
  hard             baseline   gold labels of the original training split
  soft             distilled  the teacher's logits on the original training split
  soft+aug         augmented  the teacher's logits on the original training split + the transfer set
  soft+aug+anneal  annealed   the same data, with teacher annealing (Clark et al. 2019)

Annealing. Students trained step by step (bilstm, transformer) anneal for real: the target slides from the teacher's
distribution to the gold label as lambda = step / total goes from 0 to 1. The scikit-learn students are fitted to
convergence in one go, so there is no step to anneal over. Their losses are linear in the target (cross-entropy:
logistic regression, naive Bayes), so minimising the annealed loss summed over a schedule lambda = 0..1 is the same
as fitting the schedule's average target, 0.5 * teacher + 0.5 * gold: that fixed mix is what they get (for ridge,
which regresses logits, the mix is an approximation). A transfer-set text has no gold label; its reference label is
the teacher's own decision (argmax), so annealing sharpens the teacher there instead of inventing a label.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from . import assistant, assistant_comparison, stages
from . import data as datasets
from . import students as student_zoo
from .atomic import atomic_path, write_text
from .errors import UserError, one_line_errors
from .metrics import bootstrap_ci, count_params, evaluate
from .pipeline import Run, logits_of
from .students.soft import softmax
from .transfer import labelled_by

VARIANTS = {"hard": "baseline", "soft": "distilled", "soft+aug": "augmented", "soft+aug+anneal": "annealed"}
# score, score_low, score_high: the run's metric (named in `metric`) and its CI, as in accuracy.csv and results.csv;
# gain_vs_hard and its CI are in that metric too. accuracy and its CI stay beside it for readers of older tables.
COLUMNS = ["student", "variant", "model", "metric", "score", "score_low", "score_high", "accuracy", "ci_low", "ci_high",
           "macro_f1", "agreement", "gain_vs_hard", "gain_ci_low", "gain_ci_high", "train_texts", "train_seconds",
           "params"]


def fixed_mix_logits(teacher_logits: np.ndarray, gold: np.ndarray, weight: float = 0.5, floor: float = 1e-4):
    """Logits (log-probabilities) of (1 - weight) * softmax(teacher) + weight * one_hot(gold): the average target
    of a linear annealing schedule when weight = 0.5. Probabilities are floored so no log is infinite."""
    probs = softmax(teacher_logits)
    one_hot = np.eye(probs.shape[1])[np.asarray(gold)]
    mix = (1 - weight) * probs + weight * one_hot
    return np.log(np.maximum(mix, floor)).astype(np.float32)


def paired_gain_ci(correct: np.ndarray, correct_hard: np.ndarray, n_resamples=1000, seed=13, level=0.95):
    """Paired bootstrap interval of accuracy(variant) - accuracy(hard) from their 0/1 vectors on the same test
    examples (`Metric.difference_ci` does the same for any metric)."""
    diff = np.asarray(correct, dtype=np.float64) - np.asarray(correct_hard, dtype=np.float64)
    return bootstrap_ci(diff, n_resamples, seed, level)


def ablation_students(cfg: dict) -> list[str]:
    if "ablation" not in cfg or "transfer" not in cfg:
        raise UserError("the profile has no [ablation] or [transfer] section; inherit configs/default.toml")
    c = cfg["ablation"]
    names = list(c["students"]) + (["born_again"] if c.get("born_again") else [])
    unknown = [n for n in names if n not in student_zoo.REGISTRY]
    if unknown:
        raise UserError(f"unknown student(s) {', '.join(unknown)} in ablation.students; "
                        f"choose from {', '.join(student_zoo.REGISTRY)}")
    return names


def variants_of(cfg: dict, name: str) -> list[str]:
    annealed = name in cfg["ablation"]["anneal"]
    return [v for v in VARIANTS if v != "soft+aug+anneal" or annealed]


def build_all(run: Run) -> None:
    """Every stage the ablation reads, each cached: data, teacher, soft labels, hard and soft students, the
    transfer set, and the students trained on it (the stage graph, distill/stages.py)."""
    modes = {name: [VARIANTS[v] for v in variants_of(run.cfg, name)] for name in ablation_students(run.cfg)}
    planned = stages.plan(modes, mix=fixed_mix_logits, assistants=assistant.candidates(run.cfg))
    if assistant_comparison.wanted(run.cfg):   # the teacher assistant's labels against the teacher's
        planned.append(stages.ASSISTANT_COMPARISON)
    stages.build_all(run, planned, then="ablation on the test split")


def ablation_table(run: Run) -> pd.DataFrame:
    """One row per (student, variant): the run's metric on the test split with its CI (accuracy beside it), and the
    gain over the hard-label twin in that metric with a paired bootstrap CI."""
    c, metric = run.cfg["eval"], run.metric()
    texts, gold = datasets.texts_labels(run.split(), "test")
    teacher_pred = logits_of(run.soft_labels(), "test").argmax(1)
    train_size = int((run.split()["split"] == "train").sum())
    rows = []
    for name in ablation_students(run.cfg):
        hard_pred = None
        for variant in variants_of(run.cfg, name):
            model_id = f"{name}-{VARIANTS[variant]}"
            info = run.stage_info(f"students/{model_id}")
            proba = run.student(model_id).predict_proba(texts)
            pred = np.asarray(proba).argmax(1)
            hard_pred = pred if hard_pred is None else hard_pred
            gain, low, high = metric.difference_ci(gold, pred, hard_pred, c["bootstrap"], c["seed"])
            rows.append({"student": name, "variant": variant, "model": model_id,
                         **evaluate(gold, proba, teacher_pred, c["bootstrap"], c["seed"], metric),
                         "gain_vs_hard": gain, "gain_ci_low": low, "gain_ci_high": high,
                         "train_texts": info.get("train_texts", train_size),
                         "train_seconds": info["train_seconds"], "params": info["params"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(run: Run, table: pd.DataFrame, command: str) -> str:
    c, metric = run.cfg["eval"], run.metric()
    texts, gold = datasets.texts_labels(run.split(), "test")
    teacher = evaluate(gold, logits_of(run.soft_labels(), "test"), None, c["bootstrap"], c["seed"], metric)
    transfer = run.stage_info("transfer")
    lines = [f"# Distillation ablation: {run.profile} profile", "",
             f"Data `{run.cfg['data']['name']}`, {len(gold):,} test examples; teacher `{run.cfg['teacher']['model']}` "
             f"{metric.spec} {teacher['score']:.4f} [{teacher['score_low']:.4f}, {teacher['score_high']:.4f}].",
             f"Transfer set: {transfer['rows']:,} texts ({transfer['augmented']:,} augmented, "
             f"{transfer['unlabelled']:,} unlabelled), labelled by {labelled_by(transfer)} in "
             f"{transfer['label_seconds']:.0f}s ({transfer['texts_per_second']:.0f} texts/s).",
             *assistant_lines(run),
             f"Made by `{command}`. Test {metric.spec} [bootstrap 95% CI]:", "",
             "| student | " + " | ".join(VARIANTS) + " |", "|---" * (len(VARIANTS) + 1) + "|"]
    for name, rows in table.groupby("student", sort=False):
        cells = {r.variant: f"{r.score:.4f} [{r.score_low:.4f}, {r.score_high:.4f}]" for r in rows.itertuples()}
        lines.append(f"| {name} | " + " | ".join(cells.get(v, "—") for v in VARIANTS) + " |")
    lines += ["", f"Best variant per student against its hard-label twin ({metric.spec} gain with a paired bootstrap "
              "95% CI; 'beats' = gain larger than the hard twin's CI half-width):", "",
              "| student | best variant | gain | gain 95% CI | beats hard |", "|---|---|---|---|---|"]
    for name, rows in table.groupby("student", sort=False):
        hard = rows[rows["variant"] == "hard"].iloc[0]
        best = rows.loc[rows["score"].idxmax()]
        half_width = (hard["score_high"] - hard["score_low"]) / 2
        beats = "yes" if best["gain_vs_hard"] > half_width else "no"
        lines.append(f"| {name} | {best['variant']} | {best['gain_vs_hard']:+.4f} | "
                     f"[{best['gain_ci_low']:+.4f}, {best['gain_ci_high']:+.4f}] | {beats} |")
    return "\n".join(lines) + "\n"


def assistant_lines(run: Run) -> list[str]:
    """The teacher assistant's paired comparison, when it was built."""
    if not assistant_comparison.wanted(run.cfg):
        return []
    info = run.stage_info(stages.ASSISTANT_COMPARISON.name)
    return [f"Teacher assistant's labels vs the teacher's: {assistant_comparison.sentence(info)}."]


def run_ablation(run: Run, command: str = "python -m distill.ablation") -> pd.DataFrame:
    build_all(run)
    table = ablation_table(run)
    run.reports.mkdir(parents=True, exist_ok=True)
    if assistant.enabled(run.cfg):
        assistant_comparison.write_report(run)
    with atomic_path(run.reports / "ablation.csv") as path:
        table.to_csv(path, index=False, float_format="%.4f")
    write_text(run.reports / "ablation.md", markdown(run, table, command))
    return table


@one_line_errors
def main(argv=None) -> int:
    from .cli import config_from_args, open_run, parser

    p = parser()
    p.prog = "mbtb ablation"
    p.description = ("Hard labels vs. soft targets vs. soft targets + augmented transfer set vs. + teacher annealing, "
                     "for each student of [ablation] students; writes reports/<profile>/ablation.csv and .md.")
    p.epilog = None
    p._option_string_actions["--students"].help = "comma-separated students (overrides ablation.students)"
    args = p.parse_args(argv)
    started = time.time()
    from tabulate import tabulate

    students, args.students = args.students, None
    cfg = config_from_args(args)
    if students is not None:
        cfg["ablation"]["students"] = [n.strip() for n in students.split(",") if n.strip()]
    run = open_run(args, cfg)
    command = " ".join(["python -m distill.ablation", *(sys.argv[1:] if argv is None else argv)])
    table = run_ablation(run, command)
    name = run.metric().spec
    shown = table[["student", "variant", "score", "score_low", "score_high", "gain_vs_hard", "train_texts",
                   "train_seconds"]].rename(columns={"score": name, "score_low": "ci_low", "score_high": "ci_high"})
    print()
    print(tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".4f"))
    print(f"\nwrote {run.reports / 'ablation.csv'} and ablation.md in {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
