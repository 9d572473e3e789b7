"""reports: the join, the Pareto front, the budget picker and the written files, on a synthetic run."""
import json

import numpy as np
import pandas as pd
import pytest

from bench.report import build_report
from bench.results import join, pareto_front, pick
from distill.atomic import write_json
from distill.errors import UserError
from distill.families.manifest import Manifest
from distill.metrics import bootstrap_ci

VARIANTS = [  # (model, backend, kind, family, accuracy, batch-1 ms, batch-32 ms)
    ("teacher", "torch", "teacher", "transformer", 0.85, 20.0, 300.0),
    ("teacher", "onnx-int8", "teacher", "transformer", 0.84, 5.0, 80.0),
    ("bilstm-distilled", "torch", "distilled", "bilstm", 0.80, 1.0, 10.0),
    ("tfidf_lr-baseline", "sklearn", "baseline", "sklearn", 0.76, 0.4, 3.0),
    ("nb-baseline", "sklearn", "baseline", "sklearn", 0.74, 0.5, 3.5),  # dominated by tfidf_lr
]


def synthetic(tmp_path):
    manifest = {"profile": "syn", "gpu_skip_reason": "no CUDA device", "variants": [
        {"model": m, "backend": b, "kind": k, "family": f, "status": "ok", "accuracy": a, "ci_low": a - 0.02,
         "ci_high": a + 0.02, "macro_f1": a, "agreement": 0.9, "cosine_to_teacher": 0.95, "max_abs_diff": None,
         "size_bytes": 1e6, "params": 1000} for m, b, k, f, a, *_ in VARIANTS]}
    manifest["variants"].append({"model": "broken", "backend": "onnx", "status": "failed", "error": "x"})
    benchmarks = []
    for m, b, k, f, a, ms1, ms32 in VARIANTS:
        for batch, ms in ((1, ms1), (32, ms32)):
            for mode, factor in (("e2e", 1.0), ("prepare", 0.2), ("model", 0.8)):
                median = ms * factor / 1e3
                benchmarks.append({"stats": {"median": median}, "extra_info": {
                    "model": m, "backend": b, "batch_size": batch, "mode": mode, "p90": median * 1.1,
                    "throughput_per_s": batch / median, "speedup_vs_teacher_eager": None, "rss_increase_mb": 10,
                    "guard": {"contended": m == "nb-baseline", "other_load_max": 0.1}}})
    benchmarks.append({"stats": {"median": 2e-6}, "extra_info": {"model": "harness", "backend": "noop",
                                                                  "batch_size": 1, "mode": "e2e", "guard": {}}})
    bench = {"benchmarks": benchmarks, "machine_info": {"cpu_model": "test cpu", "cpu_count": 2}, "datetime": "now"}
    (tmp_path / "artifacts" / "syn" / "export").mkdir(parents=True)
    write_json(tmp_path / "artifacts" / "syn" / "export" / "manifest.json", manifest)
    (tmp_path / "reports" / "syn").mkdir(parents=True)
    write_json(tmp_path / "reports" / "syn" / "bench.json", bench)
    return Manifest.model_validate(manifest), bench


def test_join_has_one_row_per_variant_and_batch(tmp_path):
    manifest, bench = synthetic(tmp_path)
    table = join(manifest, bench)
    assert len(table) == len(VARIANTS) * 2  # failed export left out; e2e rows with model-only beside
    row = table[(table.model == "teacher") & (table.backend == "torch") & (table.batch_size == 32)].iloc[0]
    assert row.median_ms == pytest.approx(300.0) and row.model_only_median_ms == pytest.approx(240.0)
    assert row.accuracy == 0.85 and row.p90_ms == pytest.approx(330.0)


def test_pareto_front_marks_only_undominated():
    df = pd.DataFrame({"median_ms": [20, 5, 1, 0.4, 0.5], "accuracy": [0.85, 0.84, 0.80, 0.76, 0.74]})
    assert pareto_front(df).tolist() == [True, True, True, True, False]
    ties = pd.DataFrame({"median_ms": [1.0, 1.0], "accuracy": [0.8, 0.8]})
    assert pareto_front(ties).tolist() == [True, True]


def test_budget_picker(tmp_path):
    table = join(*synthetic(tmp_path))
    row, text = pick(table, budget_ms=2)
    assert (row.model, row.backend) == ("bilstm-distilled", "torch") and "2 ms" in text
    row, _ = pick(table, budget_ms=6)
    assert (row.model, row.backend) == ("teacher", "onnx-int8")
    row, text = pick(table, budget_ms=0.1)
    assert row is None and "nothing fits" in text
    row, _ = pick(table, max_drop=1.0)   # within 1 point of 0.85: only the teacher's backends
    assert (row.model, row.backend) == ("teacher", "onnx-int8")
    row, _ = pick(table, max_drop=10.0)  # 0.76 is within 9 points
    assert row.model == "tfidf_lr-baseline"


def test_bootstrap_ci_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(100) < 0.8
    large = rng.random(10_000) < 0.8
    lo_s, hi_s = bootstrap_ci(small, 500)
    lo_l, hi_l = bootstrap_ci(large, 500)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert bootstrap_ci(small, 500, seed=1) == bootstrap_ci(small, 500, seed=1)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)   # one example: nothing to resample, the value itself


def test_build_report_writes_all_files(tmp_path):
    synthetic(tmp_path)
    out = build_report("syn", tmp_path / "artifacts", tmp_path / "reports", budget_ms=2, max_drop=1)
    for name in ("results.csv", "report.md", "pareto.png", "report.html"):
        assert (out["dir"] / name).stat().st_size > 0
    md = (out["dir"] / "report.md").read_text()
    assert "★" in md and "Pick for me: best accuracy within 2 ms" in md and "test cpu" in md and "under load" in md
    html = (out["dir"] / "report.html").read_text()
    assert 'src="data:image/png;base64,' in html and "<table" in html
    assert (out["dir"] / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_the_summary_is_the_verdict_per_speedup_budget():
    """No per-example predictions here (a manifest alone): the budgets and scores, the comparison left untested."""
    result = build_report("syn", *synthetic_dirs())
    lines = result["text"].splitlines()
    assert lines[0].startswith("Teacher (PyTorch eager, 20 ms at batch 1): accuracy 0.8500 [95% CI 0.8300, 0.8700]")
    assert "keeps" not in result["text"] and "Warning" not in result["text"]
    budget = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ≥")}
    assert "teacher / onnx-int8 (4x, 5 ms)" in budget["≥ 2x"]        # the teacher's own export is a variant too
    assert "bilstm-distilled / torch (20x, 1 ms)" in budget["≥ 5x"] and "94.1%" in budget["≥ 5x"]
    assert "untested: +4.0 points (bilstm-distilled vs tfidf_lr-baseline)" in budget["≥ 15x"]
    assert "tfidf_lr-baseline / sklearn (50x" in budget["≥ 50x"]
    assert "no distilled student this fast" in budget["≥ 50x"]
    assert "nothing this fast" in budget["≥ 150x"] and "nothing this fast" in budget["≥ 500x"]


def synthetic_dirs():
    import tempfile
    from pathlib import Path
    root = Path(tempfile.mkdtemp())
    synthetic(root)
    return root / "artifacts", root / "reports"


def test_missing_bench_is_a_user_error(tmp_path):
    synthetic(tmp_path)
    (tmp_path / "reports" / "syn" / "bench.json").unlink()
    with pytest.raises(UserError, match="make bench"):
        build_report("syn", tmp_path / "artifacts", tmp_path / "reports")


def test_report_shows_where_the_time_goes_the_frontier_and_the_harness_overhead(tmp_path):
    synthetic(tmp_path)
    result = build_report("syn", tmp_path / "artifacts", tmp_path / "reports")
    table = result["table"]
    row = table[(table.model == "bilstm-distilled") & (table.batch_size == 1)].iloc[0]
    assert row.prepare_median_ms == pytest.approx(0.2) and row.model_only_median_ms == pytest.approx(0.8)
    assert row.trained_on == "teacher logits, train"
    assert "harness" not in set(table["model"])
    md = result["markdown"]
    assert "## Where the time goes" in md
    assert md.startswith("# Accuracy vs latency — profile `syn`\n\n## Verdict\n\n- Teacher (PyTorch eager")
    assert "Harness overhead" in md and "2.00 µs per call, 0.5% of the fastest student's batch-1 time " \
        "(tfidf_lr-baseline/sklearn, 400 µs)" in md
    summary_json = (tmp_path / "reports" / "syn" / "summary.json").read_text()
    assert '"harness_overhead_ms": 0.002' in summary_json


def test_frontier_picks_the_fastest_student_that_keeps_97_percent():
    from bench.results import frontier
    table = pd.DataFrame([
        {"model": "teacher", "backend": "torch", "kind": "teacher", "batch_size": 1, "accuracy": 0.80,
         "median_ms": 20.0},
        {"model": "a", "backend": "onnx", "kind": "augmented", "batch_size": 1, "accuracy": 0.79, "median_ms": 0.5},
        {"model": "b", "backend": "numpy", "kind": "augmented", "batch_size": 1, "accuracy": 0.777, "median_ms": 0.1},
        {"model": "c", "backend": "numpy", "kind": "baseline", "batch_size": 1, "accuracy": 0.70, "median_ms": 0.05},
    ])
    best, teacher = frontier(table)
    assert (best.model, teacher.model) == ("b", "teacher")     # 0.777 >= 0.97 * 0.80 = 0.776
    best, _ = frontier(table, keep=0.98)
    assert best.model == "a"


def test_the_teacher_timed_twice_is_every_speedups_denominator_and_its_drift_is_reported(tmp_path):
    """bench/test_reference_again's second pass of the teacher in eager: the median of both passes' rounds divides
    every speedup, and a machine that changed speed between them is called out."""
    from bench.results import reference_passes
    _, bench = synthetic(tmp_path)
    for case in bench["benchmarks"]:
        info = case["extra_info"]
        if (info["model"], info["backend"], info["mode"]) == ("teacher", "torch", "e2e"):
            first = case["stats"]["median"] * 1e3
            info["rounds_ms"] = [first] * 5
            info["again_rounds_ms"] = [first * 1.5] * 5 + [first * 1.4] * 2   # pooled median: 1.4 x first
    write_json(tmp_path / "reports" / "syn" / "bench.json", bench)
    assert [(p["batch_size"], p["first_ms"], p["again_ms"]) for p in reference_passes(bench)] == [
        (1, 20.0, 30.0), (32, 300.0, 450.0)]
    result = build_report("syn", tmp_path / "artifacts", tmp_path / "reports")
    table = result["table"].set_index(["model", "backend", "batch_size"])
    assert table.loc[("teacher", "torch", 1), "median_ms"] == pytest.approx(28.0)
    assert table.loc[("bilstm-distilled", "torch", 1), "speedup"] == pytest.approx(28.0)
    assert table.loc[("teacher", "torch", 1), "model_only_median_ms"] == pytest.approx(16.0)  # timed once: as it was
    md = result["markdown"]
    assert "batch 1 20 → 30 ms (+50.0%), batch 32 300 → 450 ms (+50.0%)" in md
    assert "The passes differ by 50%: the machine's speed changed during the benchmark" in md
    summary = result["dir"] / "summary.json"
    assert '"reference_line": "The teacher in PyTorch eager' in summary.read_text()


def test_a_steady_reference_is_reported_without_a_warning(tmp_path):
    from bench.report import reference_sentence
    _, bench = synthetic(tmp_path)
    assert reference_sentence(bench) is None   # timed once (a benchmark from before): nothing to say
    reference = next(c["extra_info"] for c in bench["benchmarks"]
                     if (c["extra_info"]["model"], c["extra_info"]["mode"]) == ("teacher", "e2e"))
    reference["rounds_ms"], reference["again_rounds_ms"] = [20.0, 20.4, 19.8], [20.2, 20.6, 20.0]
    sentence = reference_sentence(bench)
    assert "batch 1 20 → 20.2 ms (+1.0%)" in sentence and "differ" not in sentence


def test_the_report_says_which_text_batch_one_timed(tmp_path):
    from bench.report import batch_one_line, summary_record
    _, bench = synthetic(tmp_path)
    assert batch_one_line(bench["machine_info"]) is None   # a bench.json from before it was recorded
    bench["machine_info"]["batch_1_text"] = {"text": "a fine film", "words": 3, "median_of": 5}
    write_json(tmp_path / "reports" / "syn" / "bench.json", bench)
    out = build_report("syn", tmp_path / "artifacts", tmp_path / "reports", budget_ms=2, max_drop=1)
    line = 'batch 1 times the test text of median length (3 words of 5 texts\' median): "a fine film"'
    assert line in (out["dir"] / "report.md").read_text()
    assert json.loads((out["dir"] / "summary.json").read_text())["machine"]["batch_1_text"]["words"] == 3
