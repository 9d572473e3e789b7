"""Issue 27, part 4: a teacher assistant labels the transfer set ([labelling] assistant), accepted only when it
passes its check against the teacher, recorded as who labelled, and compared with the teacher's labels."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from distill import ablation, assistant, labelling, stages, transfer
from distill.config import apply_overrides, fingerprint, load_profile
from distill.errors import UserError
from distill.pipeline import Run
from tests.conftest import tiny_config

# The tiny run's teacher is random, so these thresholds are what lets a 20-step student pass (or fail) for sure.
PASSES = ["labelling.assistant_agreement=0.0", "labelling.assistant_tolerance=1000.0"]
FAILS = ["labelling.assistant_agreement=1.0", "labelling.assistant_tolerance=0.0"]
SMALL_ABLATION = ["ablation.students=[\"nb\"]", "ablation.anneal=[]", "labelling.assistant_compare=60",
                  "labelling.assistant_compare_student=\"nb\""]


def run_like(source: Run, directory, extra, log=lambda *_: None) -> Run:
    """A copy of `source`'s stages under `directory`, opened with its teacher and `extra` over the tiny settings."""
    shutil.copytree(source.dir, directory / "artifacts" / "tiny")
    cfg = tiny_config(source.cfg["teacher"]["model"], ['labelling.backend="auto"', *extra])
    return Run("tiny", cfg, directory / "artifacts", directory / "reports", progress=False, log=log)


@pytest.fixture(scope="module")
def assisted(sensitive_teacher, tmp_path_factory) -> Run:
    """`mbtb ablation` (one cheap student) with transformer-distilled as the assistant, set to pass its check. The
    sensitive teacher answers differently from text to text, so the assistant's logits are not the teacher's."""
    root = tmp_path_factory.mktemp("assisted")
    cfg = tiny_config(sensitive_teacher, ['labelling.backend="auto"', 'labelling.assistant="transformer-distilled"',
                                          *PASSES, *SMALL_ABLATION])
    run = Run("tiny", cfg, root / "artifacts", root / "reports", progress=False, log=lambda *_: None)
    ablation.run_ablation(run)
    return run


def test_a_passing_assistant_labels_the_transfer_set_and_says_so(assisted):
    info = assisted.stage_info("assistant")
    assert info["chosen"]["model"] == "transformer-distilled" and info["teacher"]["texts_per_second"] > 0
    trials = {t["backend"]: t for t in info["trials"]}
    assert set(trials) == set(assistant.TRANSFORMERS.auto_labellers)
    for trial in trials.values():
        assert {"agreement", "mean_abs_diff", "texts_per_second"} <= set(trial) and trial["passed"]
    assert info["chosen"]["backend"] == max(trials.values(), key=lambda t: t["texts_per_second"])["backend"]
    recorded = assisted.stage_info("transfer")
    assert recorded["labelled_by"] == {"model": "transformer-distilled", "backend": info["chosen"]["backend"]}
    assert "teacher assistant transformer-distilled" in recorded["logits_source"]
    frame = assisted.transfer_set()
    sample, logits = frame["text"].tolist()[:20], frame[["logit_0", "logit_1"]].to_numpy()[:20]
    # int8 quantises activations per batch, so its logits move a little with what a text is batched with
    lossy = assistant.TRANSFORMERS.backends[info["chosen"]["backend"]].lossy
    assert np.abs(logits - assistant.labeller(assisted)(sample)).mean() < (0.05 if lossy else 1e-4)
    assert np.abs(logits - assisted.labeller()(sample)).mean() > 0.01   # not the teacher's logits
    assert "labelled by the teacher assistant transformer-distilled" in (assisted.reports / "ablation.md").read_text()
    from ship.model_card import recipe
    assert "labelled by the teacher assistant transformer-distilled" in recipe(assisted, "nb-augmented")[-1]


def test_the_keys_change_with_the_assistant_and_not_otherwise(assisted, tmp_path):
    without = run_like(assisted, tmp_path, SMALL_ABLATION)   # labelling.assistant = "", the default
    assert "assistant" not in transfer.transfer_inputs(without)   # no assistant: the transfer key is what it was
    assert fingerprint(labelling.labeller_inputs(without)) == assisted.key("labeller")   # the teacher's form: same
    assert fingerprint(transfer.transfer_inputs(assisted)) != fingerprint(transfer.transfer_inputs(without))
    assert assisted.key("transfer") == fingerprint(transfer.transfer_inputs(assisted))
    ablation.build_all(without)
    built = {t["stage"] for t in without.timings if t["status"] == "built"}
    assert built == {"transfer", "students/nb-augmented"}   # labelled by the teacher now; nothing upstream rebuilt
    assert without.stage_info("transfer")["labelled_by"] == {"model": "teacher",
                                                             "backend": without.stage_info("labeller")["backend"]}


def test_the_comparison_trains_one_student_on_each_labelling_and_writes_a_paired_ci(assisted):
    info = assisted.stage_info("assistant_comparison")
    assert info["student"] == "nb" and info["texts"] == 60 and info["teacher_label_seconds"] > 0
    assert info["ci_low"] <= info["difference"] <= info["ci_high"]
    assert info["difference"] == pytest.approx(info["assistant_labelled"] - info["teacher_labelled"])
    report = json.loads((assisted.reports / "assistant.json").read_text())
    assert report["comparison"] == info and report["transfer"]["labelled_by"]["model"] == "transformer-distilled"
    assert report["assistant"]["trials"] and report["assistant"]["teacher"]["texts_per_second"] > 0
    assert "Teacher assistant's labels vs the teacher's: nb on train + 60 transfer texts" in \
        (assisted.reports / "ablation.md").read_text()


def test_a_named_assistant_that_fails_its_check_is_a_one_line_error(assisted, tmp_path):
    run = run_like(assisted, tmp_path, ['labelling.assistant="transformer-distilled"', *FAILS])   # trained: the check
    with pytest.raises(UserError, match=r"^labelling.assistant = 'transformer-distilled' fails its check on \d+ dev "
                                        r"texts: .* agrees with the teacher on [\d.]+ .* lower the thresholds, train "
                                        r"it longer, or set labelling.assistant = \"\"$"):
        stages.build(run, stages.ASSISTANT)


def test_auto_with_no_assistant_passing_falls_back_to_the_teacher_and_logs_it(assisted, tmp_path):
    lines = []
    auto = ['labelling.assistant="auto"', *FAILS, 'ablation.students=["nb", "transformer"]']
    run = run_like(assisted, tmp_path, auto, log=lines.append)
    assert assistant.candidates(run.cfg) == ["transformer-distilled"]
    stages.build(run, stages.ASSISTANT)
    stages.build(run, stages.TRANSFER)
    assert run.stage_info("assistant")["chosen"] is None and assistant.labeller(run) is None
    assert any("the teacher labels the transfer set" in line for line in lines)
    assert run.stage_info("transfer")["labelled_by"]["model"] == "teacher"
    assert any("labelled by the teacher in" in line for line in lines)


# --- the choice, the plan and the settings, without a run ---------------------------------------------------------
def trial(model, backend, rate, passed=True, agreement=0.95, diff=0.5):
    return {"model": model, "backend": backend, "texts_per_second": rate, "passed": passed, "agreement": agreement,
            "mean_abs_diff": diff, "max_length": 64}


CHECK = {"assistant_agreement": 0.9, "assistant_tolerance": 1.0}


def test_auto_takes_the_fastest_passing_export_that_beats_the_teacher():
    trials = [trial("a-distilled", "onnx-int8", 300), trial("a-distilled", "ort-opt", 200),
              trial("b-distilled", "onnx-int8", 900, passed=False)]
    chosen = assistant.choose(trials, 100, {**CHECK, "assistant": "auto"}, 256, log=lambda *_: None)
    assert chosen == {"model": "a-distilled", "backend": "onnx-int8", "max_length": 64}
    assert assistant.choose(trials, 400, {**CHECK, "assistant": "auto"}, 256, log=lambda *_: None) is None


def test_a_named_assistant_that_passes_labels_even_when_slower_and_the_log_says_so():
    lines = []
    chosen = assistant.choose([trial("a-distilled", "ort-opt", 50)], 100, {**CHECK, "assistant": "a-distilled"}, 256,
                              log=lines.append)
    assert chosen["model"] == "a-distilled" and "slower than the teacher" in lines[0]


def test_the_plan_checks_the_assistant_after_its_student_and_before_the_transfer_set():
    ablation_plan = {"nb": ["baseline", "distilled", "augmented"]}
    names = [s.name for s in stages.plan(ablation_plan, assistants=["transformer-distilled"])]
    assert names[4:] == ["students/nb-baseline", "students/nb-distilled", "students/transformer-distilled",
                         "assistant", "transfer", "students/nb-augmented"]
    assert "assistant" not in [s.name for s in stages.plan(ablation_plan)]
    assert "assistant" not in [s.name for s in stages.plan({"nb": ["baseline", "distilled"]}, assistants=[])]


def test_the_default_profile_asks_for_no_assistant_and_a_bad_one_is_refused():
    profile = load_profile("default")
    assert assistant.candidates(profile) is None
    auto = apply_overrides(profile, ['labelling.assistant="auto"'])   # the profile's transformer student's twin
    assert assistant.candidates(auto) == ["transformer-distilled"]
    with pytest.raises(UserError, match=r"labelling.assistant must be \"\", \"auto\" or a transformer student trained "
                                        r"on the split \(transformer-distilled, .*\), not 'bilstm-distilled'"):
        apply_overrides(profile, ['labelling.assistant="bilstm-distilled"'])
    with pytest.raises(UserError, match="not 'transformer-augmented'"):   # trained on the set it would label
        apply_overrides(profile, ['labelling.assistant="transformer-augmented"'])


def test_assistant_candidates_narrows_what_auto_tries_and_only_that_list_joins_the_key():
    auto = apply_overrides(load_profile("default"), ['labelling.assistant="auto"',
                                                    'students.names=["nb", "transformer", "transformer_deep"]'])
    assert assistant.candidates(auto) == ["transformer-distilled", "transformer_deep-distilled"]
    narrowed = apply_overrides(auto, ['labelling.assistant_candidates=["transformer"]'])
    assert assistant.candidates(narrowed) == ["transformer-distilled"]
    # the setting shapes the candidates, whose stage keys the assistant's key hashes: it is not hashed itself
    assert "assistant_candidates" not in assistant.CHECKED
    assert "assistant_candidates" in labelling.ASSISTANT_KEYS   # nor in the teacher labeller's key
    with pytest.raises(UserError, match="names transformer_small, which this profile does not train"):
        assistant.candidates(apply_overrides(auto, ['labelling.assistant_candidates=["transformer_small"]']))
    with pytest.raises(UserError, match="labelling.assistant_candidates names bilstm, not a transformer student"):
        apply_overrides(auto, ['labelling.assistant_candidates=["bilstm"]'])
