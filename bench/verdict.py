"""The report's verdict, readable in ten seconds: the teacher's score, the best variant at each speedup budget over
the teacher in PyTorch eager (batch 1, same run), whether distillation paid there, and a warning when a student
beats the teacher. bench/report.py writes it; scripts/results_tables.py prints it from committed files.

Distillation paid at a budget when the best distilled student within it (trained on the teacher's logits) beats the
best hard-label student within it (trained on gold labels only): the paired bootstrap 95% CI of the difference in
the run's metric, on the test split, lies above zero. It cost when that CI lies below zero.
"""
from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from distill.catalogue import TRAINED_ON, parse_model_id

from .results import metric_name, scored

SPEEDUPS = (2, 5, 15, 50, 150, 500)
DISTILLED_MODES = ("distilled", "augmented", "annealed")   # trained on the teacher's logits
HARD_MODE = "baseline"                                      # trained on gold labels only
WHAT_TO_TRY = ("Train the teacher longer (teacher.epochs, teacher.min_steps, teacher.max_steps), try a larger teacher "
               "(teacher.model), or ship the hard-label student")


def training(model: str) -> str | None:
    """distilled | hard | None (the teacher): how a model learned, an ensemble as its members did."""
    mode = parse_model_id(model).mode
    return "distilled" if mode in DISTILLED_MODES else "hard" if mode == HARD_MODE else None


def best_of(rows: pd.DataFrame) -> pd.Series | None:
    """The highest-scoring row, the faster of a tie."""
    return None if rows.empty else rows.sort_values(["score", "median_ms"], ascending=[False, True]).iloc[0]


def variant(row: pd.Series | None, teacher_score: float) -> dict | None:
    if row is None:
        return None
    return {"model": row.model, "backend": row.backend, "score": float(row.score),
            "score_low": float(row.score_low), "score_high": float(row.score_high),
            "median_ms": float(row.median_ms), "speedup": float(row.speedup), "share": float(row.score / teacher_score),
            "share_low": float(row.score_low / teacher_score), "share_high": float(row.score_high / teacher_score)}


def comparison(distilled: dict | None, hard: dict | None, predictions) -> dict | None:
    """distilled - hard in the run's metric on test: paired 95% CI from the models' own predictions; without them
    (a table alone) the difference of the variants' scores, untested."""
    if distilled is None or hard is None:
        return None
    if predictions is not None and {distilled["model"], hard["model"]} <= set(predictions.models()):
        difference, low, high = predictions.difference(distilled["model"], hard["model"])
        return {"difference": difference, "low": low, "high": high}
    return {"difference": distilled["score"] - hard["score"], "low": None, "high": None}


def outcome(paid: dict | None) -> str:
    if paid is None:
        return "—"
    if paid["low"] is None:
        return "untested"
    return "paid" if paid["low"] > 0 else "cost" if paid["high"] < 0 else "no clear difference"


def budgets(b1: pd.DataFrame, teacher: pd.Series, predictions=None, speedups=SPEEDUPS) -> list[dict]:
    """Per speedup budget: the best variant at least that much faster than the teacher, and the best distilled and
    best hard-label variants within it with their comparison."""
    kinds = b1["model"].map(training)
    out = []
    for speedup in speedups:
        fast = b1["speedup"] >= speedup
        distilled = variant(best_of(b1[fast & (kinds == "distilled")]), teacher.score)
        hard = variant(best_of(b1[fast & (kinds == "hard")]), teacher.score)
        out.append({"speedup": speedup, "best": variant(best_of(b1[fast]), teacher.score), "distilled": distilled,
                    "hard": hard, "paid": comparison(distilled, hard, predictions)})
    return out


def beaten_by(predictions) -> list[dict]:
    """Students above the teacher on dev, or whose paired CI against it on test lies above zero; the widest dev
    margin first."""
    teacher_dev, teacher_test = predictions.score("teacher", "dev"), predictions.score("teacher")
    found = []
    for model in predictions.models():
        if model == "teacher":
            continue
        dev = predictions.score(model, "dev")
        difference, low, high = predictions.difference(model, "teacher")
        above_on_dev = dev is not None and teacher_dev is not None and dev > teacher_dev + 1e-12
        if above_on_dev or low > 0:
            found.append({"model": model, "dev": dev, "teacher_dev": teacher_dev, "test": teacher_test + difference,
                          "teacher_test": teacher_test, "difference": difference, "low": low, "high": high})
    return sorted(found, key=lambda r: ((r["dev"] or 0) - (r["teacher_dev"] or 0), r["difference"]), reverse=True)


def best_hard_student(predictions) -> str | None:
    """The hard-label student to ship instead: the best on dev (on test when there is no dev split)."""
    hard = [m for m in predictions.models() if training(m) == "hard"]
    split = "dev" if predictions.score("teacher", "dev") is not None else "test"
    return max(hard, key=lambda m: predictions.score(m, split), default=None)


def warning(beaten: list[dict], metric: str, ship: str | None) -> str:
    """The first line of the report when `beaten` names anyone: the top student's scores and what to try."""
    top = beaten[0]
    dev = (f"{top['dev']:.4f} {metric} on dev against the teacher's {top['teacher_dev']:.4f}, and "
           if top["dev"] is not None else f"{metric} ")
    more = f"; {len(beaten) - 1} more student(s) also score above the teacher" if len(beaten) > 1 else ""
    how = TRAINED_ON[parse_model_id(top["model"]).mode]
    return (f"Warning: the teacher is beaten. {top['model']} ({how}) scores {dev}"
            f"{top['test']:.4f} on test against {top['teacher_test']:.4f} (difference {top['difference']:+.4f}, "
            f"paired 95% CI [{top['low']:+.4f}, {top['high']:+.4f}]){more}. {WHAT_TO_TRY}"
            + (f" ({ship})." if ship else "."))


def verdict(table: pd.DataFrame, predictions=None, picks=()) -> dict | None:
    """The verdict as JSON-ready data (summary.json's `verdict`), or None without the teacher's PyTorch eager row
    at batch 1. `predictions` (distill.predictions.Predictions) adds the paired CIs, dev scores and the warning."""
    table = scored(table)
    b1 = table[table["batch_size"] == 1]
    teacher = b1[(b1["model"] == "teacher") & (b1["backend"] == "torch")]
    if teacher.empty:
        return None
    teacher, name = teacher.iloc[0], metric_name(table)
    beaten = beaten_by(predictions) if predictions is not None else []
    return {"metric": name, "checked": predictions is not None,
            "warning": warning(beaten, name, best_hard_student(predictions)) if beaten else None,
            "teacher": {"score": float(teacher.score), "score_low": float(teacher.score_low),
                        "score_high": float(teacher.score_high), "median_ms": float(teacher.median_ms),
                        "dev": predictions.score("teacher", "dev") if predictions is not None else None,
                        "training": predictions.teacher_training if predictions is not None else None},
            "budgets": budgets(b1, teacher, predictions), "beaten": beaten, "picks": list(picks)}


def share_text(best: dict, v: dict) -> str:
    """Its share of the teacher; above 100% it says so, and whether that was checked."""
    text = f"{best['share']:.1%} [{best['share_low']:.1%}, {best['share_high']:.1%}]"
    if best["share"] <= 1:
        return text
    if v["warning"]:
        return text + ", above the teacher: see the warning"
    return text + (", above the teacher on test, within noise" if v["checked"] else ", above the teacher (unchecked)")


def paid_text(row: dict) -> str:
    paid = row["paid"]
    if paid is None:
        missing = "distilled" if row["distilled"] is None else "hard-label"
        return f"no {missing} student this fast"
    ci = f" [{100 * paid['low']:+.1f}, {100 * paid['high']:+.1f}]" if paid["low"] is not None else ""
    return (f"{outcome(paid)}: {100 * paid['difference']:+.1f} points{ci} ({row['distilled']['model']} vs "
            f"{row['hard']['model']})")


def budget_table(v: dict) -> pd.DataFrame:
    """The budgets as display strings, one row each."""
    rows = []
    for row in v["budgets"]:
        best = row["best"]
        rows.append({"speedup": f"≥ {row['speedup']:g}x",
                     "best variant": f"{best['model']} / {best['backend']} ({best['speedup']:.0f}x, "
                                     f"{best['median_ms']:.3g} ms)" if best else "nothing this fast",
                     f"{v['metric']} [95% CI]": f"{best['score']:.4f} [{best['score_low']:.4f}, "
                                                f"{best['score_high']:.4f}]" if best else "—",
                     "of the teacher": share_text(best, v) if best else "—",
                     "distilled vs hard-label (paired 95% CI)": paid_text(row)})
    return pd.DataFrame(rows)


def distillation_line(v: dict) -> str:
    """Where distillation paid, cost, or made no clear difference, in one sentence."""
    by_outcome: dict[str, list[str]] = {}
    for row in v["budgets"]:
        by_outcome.setdefault(outcome(row["paid"]), []).append(f"≥ {row['speedup']:g}x")
    parts = [f"{word} at {', '.join(where)}" for word, where in by_outcome.items() if word != "—"]
    how = "paired 95% CI on test" if v["checked"] else "no per-example predictions: untested"
    return (f"Distillation (best distilled vs best hard-label student per budget, {how}): "
            + ("; ".join(parts) if parts else "no budget has both") + ".")


def training_text(training: dict | None) -> str:
    """How far the teacher's fine-tune went, so a reader can tell a teacher at its plateau from a cut-short one."""
    if not training:
        return ""
    steps, planned, best = training["steps"], training.get("planned_steps"), training["best_step"]
    if planned and steps < planned:
        how = f"early stopping ended it at step {steps} of {planned}"
    else:
        how = f"it ran its whole schedule of {steps} steps" + (" (still improving at the end: it may gain from "
                                                               "more)" if best == steps else "")
    return f"; fine-tuned to its best dev score at step {best}, {how}"


def lines(v: dict) -> list[str]:
    """The verdict's sentences: the warning first when there is one, then the teacher, distillation, the picks."""
    t = v["teacher"]
    dev = f", {t['dev']:.4f} on dev" if t.get("dev") is not None else ""
    out = [v["warning"]] if v["warning"] else []
    out.append(f"Teacher (PyTorch eager, {t['median_ms']:.3g} ms at batch 1): {v['metric']} {t['score']:.4f} "
               f"[95% CI {t['score_low']:.4f}, {t['score_high']:.4f}] on test{dev}{training_text(t.get('training'))}.")
    out.append(distillation_line(v))
    return out + [f"Pick for me: {p}" for p in v["picks"]]


def text(v: dict | None, bullet: str = "") -> str:
    """The verdict as the command prints it; with bullet="- ", as Markdown."""
    if v is None:
        return "no verdict: the teacher's PyTorch eager row at batch 1 is missing"
    return "\n".join(bullet + line for line in lines(v)) + "\n\n" + tabulate(
        budget_table(v), headers="keys", tablefmt="github", showindex=False)
