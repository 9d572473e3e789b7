"""Issue 11: labelling with the fastest faithful form of the teacher ([labelling] backend, tolerance)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from distill import data as datasets
from distill import labelling
from distill.ablation import paired_gain_ci
from distill.errors import UserError
from distill.pipeline import Run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def dev_sample(tiny_run):
    return datasets.texts_labels(tiny_run.split(), "dev")[0][:64]


def test_auto_exports_every_candidate_and_takes_the_fastest_that_passes(tiny_run):
    info = tiny_run.stage_info("labeller")
    trials = {t["backend"]: t for t in info["trials"]}
    candidates = labelling.TEACHER.auto_labellers   # OpenVINO's two too, where installed
    assert {"onnx-int8", "ort-opt"} <= set(candidates) and set(trials) == {"torch", *candidates}
    assert trials["ort-opt"]["mean_abs_diff"] < 1e-3 and trials["ort-opt"]["passed"]  # fp32: the same function
    assert info["backend"] == labelling.pick(info["trials"])["backend"]
    for backend in candidates:  # kept for bench to reuse
        assert tiny_run.labeller_export(backend) is not None
    assert info["backend"] in tiny_run.stage_info("soft_labels")["logits_source"] or info["backend"] == "torch"


def trial(backend, rate, passed=True):
    return {"backend": backend, "texts_per_second": rate, "passed": passed}


@pytest.mark.parametrize("torch_rate, int8_passed, expected", [
    (21, True, "onnx-int8"),    # int8 fastest and faithful
    (21, False, "ort-opt"),     # a near tie with PyTorch keeps the faithful export: the choice must not follow noise
    (30, False, "torch"),       # PyTorch 1.5x faster (a GPU): it labels
    (21, None, "torch"),        # no export passed
])
def test_pick_prefers_a_faithful_export_unless_torch_is_clearly_faster(torch_rate, int8_passed, expected):
    trials = [trial("torch", torch_rate), trial("onnx-int8", 32, bool(int8_passed)),
              trial("ort-opt", 19, int8_passed is not None)]
    assert labelling.pick(trials)["backend"] == expected


def test_labeller_logits_match_the_recorded_validation(tiny_run, dev_sample):
    label = tiny_run.labeller()
    torch_label = labelling.Labeller("torch", tiny_run.verified_dir("labeller"), tiny_run.teacher_dir(),
                                     tiny_run.cfg["teacher"]["max_length"], 32)
    diff = np.abs(label(dev_sample) - torch_label(dev_sample))
    assert diff.mean() <= tiny_run.cfg["labelling"]["tolerance"]


def test_a_backend_past_the_tolerance_falls_back_to_torch(tiny_run, dev_sample, tmp_path):
    c = {**labelling.settings({}), "tolerance": 0.0, "batch_size": 32}   # no export is bit-exact
    info = labelling.choose(tiny_run.teacher_dir(), dev_sample, c, 48, tmp_path, log=lambda *_: None)
    assert info["backend"] == "torch"
    assert [t["passed"] for t in info["trials"]] == [True] + [False] * len(labelling.TEACHER.auto_labellers)


def test_a_named_backend_past_the_tolerance_is_a_one_line_error(tiny_run, dev_sample, tmp_path):
    c = {**labelling.settings({}), "backend": "onnx", "tolerance": 0.0, "batch_size": 32}
    with pytest.raises(UserError, match=r"labelling.backend = 'onnx' moves .* raise the tolerance"):
        labelling.choose(tiny_run.teacher_dir(), dev_sample, c, 48, tmp_path, log=lambda *_: None)


def test_unknown_backend_is_refused():
    with pytest.raises(UserError, match="labelling.backend must be one of"):
        labelling.settings({"labelling": {"backend": "tensorrt"}})


def test_students_on_onnx_logits_match_students_on_torch_logits(tiny_run, tmp_path):
    """The same run labelled by PyTorch: the labeller, soft labels and distilled students are rebuilt (data, teacher
    and hard-label students stay cached), and each distilled student's test accuracy is within the paired CI."""
    shutil.copytree(tiny_run.dir, tmp_path / "artifacts" / "tiny")
    cfg = tiny_config(tiny_run.cfg["teacher"]["model"], ['labelling.backend="torch"'])
    torch_run = Run("tiny", cfg, tmp_path / "artifacts", tmp_path / "reports", progress=False, log=lambda *_: None)
    torch_run.all()
    built = {t["stage"] for t in torch_run.timings if t["status"] == "built"}
    assert {"labeller", "soft_labels"} <= built and "teacher" not in built
    assert torch_run.stage_info("labeller")["backend"] == "torch"
    texts, gold = datasets.texts_labels(tiny_run.split(), "test")
    compared = 0
    students = [m for m in tiny_run.model_ids(["distilled"]) if m != "teacher" and not m.startswith("ensemble")]
    for model_id in students:
        correct = tiny_run.student(model_id).predict(texts) == gold
        correct_torch = torch_run.student(model_id).predict(texts) == gold
        low, high = paired_gain_ci(correct, correct_torch, 1000, 13)
        assert low <= 0 <= high, (model_id, correct.mean(), correct_torch.mean(), low, high)
        compared += 1
    assert compared >= 3
    soft = pd.merge(tiny_run.soft_labels(), torch_run.soft_labels(), on=["text", "split"])
    assert np.abs(soft["logit_0_x"] - soft["logit_0_y"]).mean() <= tiny_run.cfg["labelling"]["tolerance"]
