"""The speedup-regression gates: the A/B gate (bench/ab.py) judging synthetic rounds, then for real on the smoke
profile against HEAD with a planted slowdown; the one-revision ratio gate (bench/gate.py) on synthetic runs."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.ab import judge
from bench.ab_worker import planted
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


def test_a_baseline_from_another_cpu_is_refused(tmp_path, capsys):
    here = bench_json(BASE_MS)
    write_json(tmp_path / "here.json", here)
    baseline = tmp_path / "baseline.json"
    assert gate_main(["--bench", str(tmp_path / "here.json"), "--baseline", str(baseline), "--update"]) == 0
    assert json.loads(baseline.read_text())["cpu_flags"] == ["avx2"]
    assert gate_main(["--bench", str(tmp_path / "here.json"), "--baseline", str(baseline)]) == 0
    here["machine_info"]["cpu_flags"] = ["avx2", "avx512_vnni"]
    write_json(tmp_path / "vnni.json", here)
    assert gate_main(["--bench", str(tmp_path / "vnni.json"), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "another CPU" in err and "make gate" in err


# --- the A/B gate ----------------------------------------------------------------------------------------------
def rounds(change, noise, n=12, seed=0):
    """Base and head times of n rounds: a shared per-round load factor (what interleaving cancels), the head
    `change` times slower, and independent noise of +-`noise` on each side."""
    rng = np.random.default_rng(seed)
    load = np.exp(rng.uniform(0, np.log(3), n))
    base = 1e-3 * load * np.exp(rng.uniform(-noise, noise, n))
    head = 1e-3 * load * np.exp(rng.uniform(-noise, noise, n)) * change
    return base, head


@pytest.mark.parametrize("seed", range(20))
def test_shared_load_and_5_percent_noise_pass(seed):
    assert judge(*rounds(1.0, 0.05, seed=seed), tolerance=1.2).status == "ok"


@pytest.mark.parametrize("seed", range(20))
def test_a_2x_slowdown_regresses_under_shared_load(seed):
    verdict = judge(*rounds(2.0, 0.05, seed=seed), tolerance=1.2)
    assert verdict.status == "REGRESSED" and verdict.ci_low > 1.5


def test_noise_that_leaves_the_tolerance_inside_the_ci_is_undecided_not_passed():
    assert judge(*rounds(1.0, 0.5, seed=1), tolerance=1.2).status == "UNDECIDED"


def test_a_change_below_the_tolerance_does_not_fail():
    assert judge(*rounds(1.1, 0.01, seed=0), tolerance=1.2).status == "ok"
    assert judge(*rounds(0.5, 0.01, seed=0), tolerance=1.2).status == "improved"


@pytest.mark.parametrize("factor, expected_calls", [(1, 100), (2, 200), (1.3, 130)])
def test_planted_slowdown_does_factor_times_the_work(factor, expected_calls):
    calls = []
    slowed = planted(calls.append, factor)
    for _ in range(100):
        slowed(None)
    assert len(calls) == expected_calls


def make_gate(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(["make", "-s", "gate", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)


def tail(run: subprocess.CompletedProcess) -> str:
    return run.stdout[-3000:] + run.stderr[-3000:]


# A smaller grid than `make gate`'s 22 cases keeps `make test` short (the README's trials use the full default): four
# variants at batch 1 and 8, a teacher fine-tuned for 20 steps and labelling in PyTorch (no labeller exports), and
# only the exports those variants need.
LIGHT_ARGS = ("--students tfidf_lr,bilstm --set teacher.max_steps=20 --set labelling.backend=torch "
                "--export-backends onnx,numpy --batch-sizes 1,8 --undecided pass")
TEST_GATE_ARGS = f"--variants '^teacher/torch$$|^tfidf_lr-distilled/(sklearn|numpy)$$|^bilstm-distilled/onnx$$' " \
                 f"{LIGHT_ARGS}"
# The planted run times only the planted student's two variants: the numpy one must stay clean beside it.
PLANTED_GATE_ARGS = f"--skip-prepare --variants '^tfidf_lr-distilled/(sklearn|numpy)$$' {LIGHT_ARGS}"


@pytest.mark.slow
def test_real_ab_gate_passes_head_against_itself_then_catches_a_planted_slowdown():
    """What CI runs: HEAD in a worktree under .gate/ against this tree, smoke profile, rounds interleaved. In a clean
    clone the two are the same code, so no case may regress; a 2x slowdown planted in one student on the head side
    only must fail the gate, naming that student and no other."""
    clean = make_gate("BASE=HEAD", f"GATE_ARGS={TEST_GATE_ARGS}")
    assert clean.returncode == 0, tail(clean)
    assert "REGRESSED" not in clean.stdout
    report = json.loads((ROOT / "reports/smoke/gate-ab.json").read_text())
    assert {c["variant"] for c in report["cases"]} == {"teacher/torch", "tfidf_lr-distilled/sklearn",
                                                       "tfidf_lr-distilled/numpy", "bilstm-distilled/onnx"}
    assert all(len(c["base"]["cpu"]) == len(c["head"]["cpu"]) >= 12 for c in report["cases"])
    planted_run = make_gate("BASE=HEAD", f"GATE_ARGS={PLANTED_GATE_ARGS}",
                            env_extra={"BENCH_PLANT_SLOWDOWN": "tfidf_lr-distilled/sklearn=2"})
    assert planted_run.returncode != 0, tail(planted_run)
    _, _, regressed = planted_run.stdout.partition("speedup regression:")
    assert "tfidf_lr-distilled/sklearn b1" in regressed and "tfidf_lr-distilled/sklearn b8" in regressed
    assert "numpy" not in regressed, tail(planted_run)
