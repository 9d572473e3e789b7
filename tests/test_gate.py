"""The speedup-regression gate: ratio logic on synthetic runs, then the real gate on the smoke profile."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.gate import compare, main as gate_main, ratios
from distill.atomic import write_json

ROOT = Path(__file__).resolve().parent.parent
BASE_MS = {("teacher", "torch"): 20.0, ("teacher", "onnx-int8"): 5.0, ("tfidf_lr-distilled", "sklearn"): 0.5,
           ("bilstm-distilled", "torch"): 2.0, ("bilstm-distilled", "onnx"): 1.0}


def bench_json(ms: dict, noise=0.0, seed=0, slow=None):
    rng = np.random.default_rng(seed)
    cases = []
    for (model, backend), base in ms.items():
        for batch, scale in ((1, 1.0), (32, 12.0)):
            median = base * scale * float(np.exp(rng.uniform(-noise, noise)))
            if slow == (model, backend):
                median *= 2
            cases.append({"stats": {"median": median / 1e3}, "extra_info": {
                "model": model, "backend": backend, "batch_size": batch, "mode": "e2e", "guard": {}}})
    return {"benchmarks": cases, "machine_info": {"cpu_model": "Test CPU", "cpu_flags": ["avx2"], "threads": {"torch": 2}}}


def test_ratios_pair_students_with_teacher_and_backends_with_native():
    r = ratios(bench_json(BASE_MS))
    assert r["tfidf_lr-distilled/sklearn vs teacher/torch"] == pytest.approx(40.0)
    assert r["teacher/onnx-int8 vs teacher/torch"] == pytest.approx(4.0)
    assert r["bilstm-distilled/onnx vs bilstm-distilled/torch"] == pytest.approx(2.0)
    assert r["bilstm-distilled/torch vs teacher/torch"] == pytest.approx(10.0)
    assert not any(k.startswith("teacher/torch") for k in r)


@pytest.mark.parametrize("seed", range(10))
def test_noise_of_25_percent_raises_no_alarm(seed):
    baseline = ratios(bench_json(BASE_MS))
    _, regressed = compare(ratios(bench_json(BASE_MS, noise=np.log(1.25), seed=seed)), baseline, 1.6)
    assert regressed == []


def test_a_2x_slowdown_of_one_student_is_caught():
    baseline = ratios(bench_json(BASE_MS))
    rows, regressed = compare(ratios(bench_json(BASE_MS, slow=("tfidf_lr-distilled", "sklearn"))), baseline, 1.6)
    assert regressed == ["tfidf_lr-distilled/sklearn vs teacher/torch"]
    assert sum(r["status"] == "REGRESSED" for r in rows) == 1


def test_cli_update_then_check(tmp_path, capsys):
    write_json(tmp_path / "b.json", bench_json(BASE_MS))
    write_json(tmp_path / "slow.json", bench_json(BASE_MS, slow=("bilstm-distilled", "onnx")))
    baseline = tmp_path / "baseline.json"
    assert gate_main(["--bench", str(tmp_path / "b.json"), "--baseline", str(baseline), "--update"]) == 0
    assert json.loads(baseline.read_text())["tolerance"] == 1.6
    assert gate_main(["--bench", str(tmp_path / "b.json"), "--baseline", str(baseline)]) == 0
    assert gate_main(["--bench", str(tmp_path / "slow.json"), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "bilstm-distilled/onnx vs bilstm-distilled/torch" in out
    assert gate_main(["--bench", str(tmp_path / "missing.json"), "--baseline", str(baseline)]) == 2


def test_baseline_from_several_runs_is_their_median(tmp_path):
    runs = [bench_json(BASE_MS), bench_json(BASE_MS, slow=("tfidf_lr-distilled", "sklearn")), bench_json(BASE_MS)]
    paths = [str(tmp_path / f"run{i}.json") for i in range(3)]
    for path, run in zip(paths, runs):
        write_json(path, run)
    baseline = tmp_path / "baseline.json"
    assert gate_main(["--bench", *paths, "--baseline", str(baseline), "--update"]) == 0
    written = json.loads(baseline.read_text())
    assert written["runs"] == 3
    assert written["ratios"]["tfidf_lr-distilled/sklearn vs teacher/torch"] == pytest.approx(40.0)


def test_a_baseline_from_another_cpu_is_flagged(tmp_path, capsys):
    here = bench_json(BASE_MS)
    write_json(tmp_path / "here.json", here)
    baseline = tmp_path / "baseline.json"
    assert gate_main(["--bench", str(tmp_path / "here.json"), "--baseline", str(baseline), "--update"]) == 0
    assert json.loads(baseline.read_text())["cpu_flags"] == ["avx2"]
    assert gate_main(["--bench", str(tmp_path / "here.json"), "--baseline", str(baseline)]) == 0
    assert "another CPU" not in capsys.readouterr().out
    here["machine_info"]["cpu_flags"] = ["avx2", "avx512_vnni"]
    write_json(tmp_path / "vnni.json", here)
    assert gate_main(["--bench", str(tmp_path / "vnni.json"), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "another CPU" in out and "avx512_vnni" in out


def make_gate(env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(["make", "-s", "gate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def tail(run: subprocess.CompletedProcess) -> str:
    return run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_real_gate_on_smoke_profile_passes_then_catches_planted_slowdown(tmp_path):
    """What CI runs: the smoke profile distilled, exported, timed; ratios against bench/baselines/smoke.json.

    The planted 2x slowdown is checked against a baseline taken from the clean run on this same machine: the
    committed baseline comes from another CPU, whose ratios may differ by more than the 1.25x margin between a 2x
    slowdown and the 1.6 tolerance.
    """
    clean = make_gate()
    assert clean.returncode == 0, tail(clean)
    assert "no speedup regression" in clean.stdout
    here = tmp_path / "baseline-here.json"
    assert gate_main(["--bench", str(ROOT / "reports/smoke/gate-bench.json"), "--baseline", str(here),
                      "--update"]) == 0
    planted = make_gate({"BENCH_PLANT_SLOWDOWN": "tfidf_lr-distilled/sklearn=2", "GATE_BASELINE": str(here)})
    assert planted.returncode != 0, tail(planted)
    assert "another CPU" not in planted.stdout
    _, _, regressed = planted.stdout.partition("fell below baseline")
    assert "tfidf_lr-distilled/sklearn vs teacher/torch" in regressed, tail(planted)
