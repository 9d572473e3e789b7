"""bench/verdict.py on small synthetic tables and predictions: the best variant per speedup budget, whether
distillation paid there, and the warning when a student beats the teacher (or none when the teacher is best)."""
import json

import numpy as np
import pandas as pd
import pytest

from bench import verdict as judge
from bench.report import build_report
from distill.metrics import ACCURACY, Metric
from distill.predictions import Predictions

from .test_report import synthetic

TEACHER_MS = 100.0


def results(*variants, metric="accuracy"):
    """A results table at batch 1: the eager teacher (0.80) and (model, backend, score, median_ms) variants."""
    rows = [("teacher", "torch", 0.80, TEACHER_MS), *variants]
    return pd.DataFrame([{"model": m, "backend": b, "batch_size": 1, "metric": metric, "score": s,
                          "score_low": s - 0.02, "score_high": s + 0.02, "median_ms": ms, "speedup": TEACHER_MS / ms}
                         for m, b, s, ms in rows])


def predictions(test: dict, dev: dict | None = None, n: int = 200, metric: Metric = ACCURACY) -> Predictions:
    """Labels of n test (and dev) examples; a model scored `a` is right on the first a * n of them, so a better
    model is right wherever a worse one is (a clear paired difference)."""
    parts = []
    for split, accuracy in (("test", test), ("dev", dev or {})):
        if not accuracy:
            continue
        gold = np.arange(n) % 2
        part = pd.DataFrame({"split": split, "gold": gold})
        for model, a in accuracy.items():
            part[model] = np.where(np.arange(n) < round(a * n), gold, 1 - gold)
        parts.append(part)
    return Predictions(pd.concat(parts, ignore_index=True), metric, 500, 13)


def test_each_budget_takes_the_best_variant_at_least_that_much_faster():
    table = results(("bilstm-augmented", "onnx", 0.79, 4.0), ("bilstm-augmented", "onnx-int8", 0.79, 2.0),
                    ("static-baseline", "numpy", 0.76, 0.1), ("nb-distilled", "numpy", 0.70, 0.5))
    v = judge.verdict(table)
    best = {b["speedup"]: b["best"] for b in v["budgets"]}
    assert (best[2]["model"], best[2]["backend"]) == ("bilstm-augmented", "onnx-int8")   # a tie: the faster
    assert best[50]["speedup"] == 50 and best[50]["share"] == pytest.approx(0.79 / 0.80)
    assert best[150]["model"] == "static-baseline" and best[500]["model"] == "static-baseline"
    hard = {b["speedup"]: b["hard"] and b["hard"]["model"] for b in v["budgets"]}
    distilled = {b["speedup"]: b["distilled"] and b["distilled"]["model"] for b in v["budgets"]}
    assert distilled == {2: "bilstm-augmented", 5: "bilstm-augmented", 15: "bilstm-augmented",
                         50: "bilstm-augmented", 150: "nb-distilled", 500: None}
    assert set(hard.values()) == {"static-baseline"}


def test_nothing_that_fast_and_no_teacher_row():
    v = judge.verdict(results(("tfidf_lr-baseline", "numpy", 0.7, 10.0)))
    rows = judge.budget_table(v).set_index("speedup")
    assert rows.loc["≥ 15x", "best variant"] == "nothing this fast"
    assert rows.loc["≥ 5x", "distilled vs hard-label (paired 95% CI)"] == "no distilled student this fast"
    assert judge.verdict(results().iloc[0:0]) is None
    assert "no verdict" in judge.text(None)


@pytest.mark.parametrize("distilled, hard, word", [(0.90, 0.75, "paid"), (0.70, 0.85, "cost"),
                                                    (0.80, 0.795, "no clear difference")])
def test_distillation_paid_is_a_paired_ci_of_distilled_minus_hard(distilled, hard, word):
    table = results(("bilstm-distilled", "onnx", distilled, 1.0), ("ensemble-baseline", "native", hard, 1.0))
    found = predictions({"teacher": 0.95, "bilstm-distilled": distilled, "ensemble-baseline": hard})
    v = judge.verdict(table, found)
    paid = v["budgets"][0]["paid"]
    assert paid["difference"] == pytest.approx(distilled - hard)
    assert paid["low"] <= paid["difference"] <= paid["high"] and judge.outcome(paid) == word
    assert f"{word}: {100 * (distilled - hard):+.1f} points [" in judge.budget_table(v).iloc[0, -1]
    assert judge.distillation_line(v).endswith(f"{word} at ≥ 2x, ≥ 5x, ≥ 15x, ≥ 50x.")


def test_no_warning_when_the_teacher_is_best(tmp_path):
    synthetic(tmp_path)
    found = predictions(test={"teacher": 0.85, "bilstm-distilled": 0.80, "tfidf_lr-baseline": 0.76},
                        dev={"teacher": 0.86, "bilstm-distilled": 0.81, "tfidf_lr-baseline": 0.78})
    result = build_report("syn", tmp_path / "artifacts", tmp_path / "reports", predictions=found)
    summary = json.loads((result["dir"] / "summary.json").read_text())
    assert summary["warning"] is None and summary["verdict"]["beaten"] == []
    assert result["markdown"].startswith("# Accuracy vs latency")
    assert "Warning" not in result["text"] and "Warning" not in (result["dir"] / "report.html").read_text()
    assert result["text"].startswith("Teacher (PyTorch eager, 20 ms at batch 1): accuracy 0.8500 "
                                     "[95% CI 0.8300, 0.8700] on test, 0.8600 on dev.")
    assert "paid: +4.0 points [" in result["text"]   # bilstm-distilled vs tfidf_lr-baseline, paired


@pytest.mark.parametrize("dev, test", [
    ({"teacher": 0.70, "nb-baseline": 0.72}, {"teacher": 0.80, "nb-baseline": 0.80}),   # above on dev only
    ({"teacher": 0.70, "nb-baseline": 0.70}, {"teacher": 0.70, "nb-baseline": 0.85}),   # paired CI above zero only
])
def test_a_student_above_the_teacher_is_the_first_line(tmp_path, dev, test):
    synthetic(tmp_path)
    found = predictions(test={**test, "bilstm-distilled": 0.6}, dev={**dev, "bilstm-distilled": 0.6})
    result = build_report("syn", tmp_path / "artifacts", tmp_path / "reports", predictions=found)
    warning = json.loads((result["dir"] / "summary.json").read_text())["warning"]
    assert warning.startswith(f"Warning: the teacher is beaten. nb-baseline (gold labels) scores "
                              f"{dev['nb-baseline']:.4f} accuracy on dev against the teacher's {dev['teacher']:.4f}, "
                              f"and {test['nb-baseline']:.4f} on test against {test['teacher']:.4f}")
    assert warning.endswith("or ship the hard-label student (nb-baseline).")
    assert result["markdown"].splitlines()[0] == f"> **{warning}**"
    assert result["text"].splitlines()[0] == warning
    assert '<body><p class="warning">' in (result["dir"] / "report.html").read_text()


def test_above_the_teacher_is_never_a_bare_share():
    table = results(("bilstm-distilled", "onnx", 0.82, 1.0))
    unchecked = judge.budget_table(judge.verdict(table)).iloc[0]["of the teacher"]
    assert unchecked == "102.5% [100.0%, 105.0%], above the teacher (unchecked)"
    within_noise = predictions({"teacher": 0.80, "bilstm-distilled": 0.805})
    assert judge.budget_table(judge.verdict(table, within_noise)).iloc[0]["of the teacher"].endswith(
        "above the teacher on test, within noise")
    beaten = predictions({"teacher": 0.80, "bilstm-distilled": 0.95})
    v = judge.verdict(table, beaten)
    assert v["warning"] and judge.budget_table(v).iloc[0]["of the teacher"].endswith("see the warning")
    assert "ship the hard-label student" in v["warning"] and "(" not in v["warning"].split("student")[-1]


def test_the_verdict_follows_the_runs_metric():
    f1 = Metric.parse("f1:b", ["a", "b"])
    found = predictions({"teacher": 0.9, "bilstm-distilled": 0.8, "tfidf_lr-baseline": 0.7}, metric=f1)
    table = results(("bilstm-distilled", "onnx", 0.8, 1.0), ("tfidf_lr-baseline", "numpy", 0.7, 1.0), metric="f1:b")
    v = judge.verdict(table, found)
    rows = found.table
    expected = f1(rows["gold"], rows["bilstm-distilled"]) - f1(rows["gold"], rows["tfidf_lr-baseline"])
    assert v["metric"] == "f1:b" and v["budgets"][0]["paid"]["difference"] == pytest.approx(expected)
    assert "f1:b [95% CI]" in judge.budget_table(v).columns and " f1:b 0.8000 " in judge.lines(v)[0]


@pytest.mark.parametrize("training, expected", [
    (None, ""),
    ({"steps": 790, "planned_steps": 957, "best_step": 636, "dev_curve": []},
     "; fine-tuned to its best dev score at step 636, early stopping ended it at step 790 of 957"),
    ({"steps": 957, "planned_steps": 957, "best_step": 957, "dev_curve": []},
     "; fine-tuned to its best dev score at step 957, it ran its whole schedule of 957 steps (still improving at "
     "the end: it may gain from more)"),
    ({"steps": 957, "planned_steps": 957, "best_step": 795, "dev_curve": []},
     "; fine-tuned to its best dev score at step 795, it ran its whole schedule of 957 steps"),
])
def test_the_teacher_line_says_how_far_its_fine_tune_went(training, expected):
    assert judge.training_text(training) == expected
    v = judge.verdict(results(("nb-baseline", "numpy", 0.70, 1.0)), predictions({"teacher": 0.8, "nb-baseline": 0.7}))
    v["teacher"]["training"] = training
    assert judge.lines(v)[0].endswith(f"on test{expected}.")
