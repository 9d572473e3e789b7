"""Issue 11: `make report` as one timed command (bench/make_report.py): every stage's wall time, a stage-time
table in reports/<profile>/timings.json, and a second run with nothing changed that rebuilds and re-times nothing.
Issue 28: it ends with the verdict, led by a warning when a student beats the teacher."""
from __future__ import annotations

import contextlib
import io
import json
import time

import pandas as pd
import pytest

from bench.make_report import main
from tests.conftest import cli_argv

BENCH = ("--modes e2e --variants 'teacher/torch$|tfidf_lr-(distilled|baseline)/numpy' --threads 1 "
         "--wait-budget 1")


def report_argv(root, teacher, *extra):
    return [*cli_argv(root, teacher), "--no-ablation", "--batch-sizes", "1", "--bench-seconds", "0.02",
            "--bench-args", BENCH, "--backends", "numpy,torchscript", *extra]


@pytest.fixture(scope="module")
def reported(tmp_path_factory, finished_cli_run, tiny_teacher_dir):
    import shutil
    root = tmp_path_factory.mktemp("make-report")
    shutil.copytree(finished_cli_run, root, dirs_exist_ok=True)
    started = time.time() - 5.0   # as if `make` had spent 5 s setting up
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(report_argv(root, tiny_teacher_dir, "--started", str(started))) == 0
    (root / "first-run.out").write_text(output.getvalue())
    return root


def test_first_run_times_every_step_and_writes_the_table(reported):
    timings = json.loads((reported / "reports" / "smoke" / "timings.json").read_text())
    steps = {s["step"]: s for s in timings["steps"]}
    assert list(steps) == ["distill", "ablation", "export", "bench", "report"]
    assert steps["ablation"]["seconds"] == 0.0 and "left out" in steps["ablation"]["note"]
    assert steps["bench"]["cases"] >= 2 and steps["export"]["seconds"] > 0
    assert timings["setup_seconds"] >= 5.0
    assert timings["total_seconds"] >= timings["setup_seconds"] + sum(s["seconds"] for s in timings["steps"]) - 1
    built = {s["stage"] for s in timings["stages"] if s["status"] == "built"}
    assert "export/teacher/torchscript" in built               # exports were built in this run
    assert "teacher" not in built                               # the distilled stages came from the copied run
    table = timings["table"]
    assert table[0]["step"] == "setup" and table[-1]["step"] == "total"
    assert (reported / "reports" / "smoke" / "report.md").exists()


def test_second_run_rebuilds_and_retimes_nothing(reported, tiny_teacher_dir, capsys):
    bench_json = reported / "reports" / "smoke" / "bench.json"
    before = bench_json.stat().st_mtime_ns
    assert main(report_argv(reported, tiny_teacher_dir)) == 0
    out = capsys.readouterr().out
    timings = json.loads((reported / "reports" / "smoke" / "timings.json").read_text())
    assert [s for s in timings["stages"] if s["status"] == "built"] == []
    assert bench_json.stat().st_mtime_ns == before
    assert "not timed again" in {s["step"]: s for s in timings["steps"]}["bench"]["note"]
    assert "where the time went" in out and timings["setup_seconds"] is None


def test_more_batch_sizes_than_were_timed_times_again(reported, tiny_teacher_dir):
    from bench.make_report import bench_is_current
    manifest = reported / "artifacts" / "smoke" / "export" / "manifest.json"
    bench_json = reported / "reports" / "smoke" / "bench.json"
    assert bench_is_current(bench_json, manifest, [1])
    assert not bench_is_current(bench_json, manifest, [1, 32])


def test_an_under_trained_teacher_is_called_out_first(reported):
    """The tiny teacher (random init, 6 steps: under-trained on purpose) loses to the gold-label students. The warning
    is report.md's first line, summary.json's and the command's verdict's, with both scores and what to try."""
    reports = reported / "reports" / "smoke"
    summary = json.loads((reports / "summary.json").read_text())
    warning = summary["warning"]
    assert warning.startswith("Warning: the teacher is beaten.") and "on dev against the teacher's" in warning
    assert "Train the teacher longer" in warning and "ship the hard-label student (" in warning
    assert (reports / "report.md").read_text().splitlines()[0] == f"> **{warning}**"
    assert summary["headline"][0] == warning
    verdict = (reported / "first-run.out").read_text().split("timings.json in")[1].splitlines()
    assert verdict[2] == warning and verdict[3].startswith("Teacher (PyTorch eager")
    top = summary["verdict"]["beaten"][0]
    assert top["dev"] > top["teacher_dev"] or top["low"] > 0
    scores = pd.read_csv(reports / "accuracy.csv").set_index("model")["score"]   # the models' own test scores
    assert top["test"] == pytest.approx(scores[top["model"]], abs=1e-4)
    assert top["teacher_test"] == pytest.approx(scores["teacher"], abs=1e-4)


def test_the_verdict_compares_distilled_and_hard_label_students_paired(reported):
    budget = json.loads((reported / "reports" / "smoke" / "summary.json").read_text())["verdict"]["budgets"][0]
    assert (budget["distilled"]["model"], budget["hard"]["model"]) == ("tfidf_lr-distilled", "tfidf_lr-baseline")
    paid = budget["paid"]
    assert paid["low"] <= paid["difference"] <= paid["high"]
    assert paid["difference"] == pytest.approx(budget["distilled"]["score"] - budget["hard"]["score"], abs=1e-9)


def test_render_reopens_the_run_for_its_verdict(reported, capsys):
    """`mbtb render` (bench.report) finds the run's cached predictions itself: the same warning, first."""
    from bench.report import main as render
    assert render(["--profile", "smoke", "--artifacts", str(reported / "artifacts"),
                   "--reports", str(reported / "reports")]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads((reported / "reports" / "smoke" / "summary.json").read_text())
    assert out[0].startswith("wrote ") and out[2] == summary["warning"] and summary["verdict"]["checked"]
