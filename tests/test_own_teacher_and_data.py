"""Your own teacher (used as it is), your own data (a run named after it), your metric and class balance, and the
one command line (`mbtb`)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from distill import teacher as T
from distill.cli import main as distill_main
from mbtb.commands import COMMANDS
from mbtb.commands import main as mbtb
from distill.errors import UserError
from distill.metrics import Metric, evaluate
from distill.pipeline import class_weights
from tests.conftest import cli_argv


def checksums(directory: Path) -> dict:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def teacher_row(root: Path, run: str) -> pd.Series:
    table = pd.read_csv(root / "reports" / run / "accuracy.csv")
    return table[table["model"] == "teacher"].iloc[0]


# --- an already fine-tuned teacher, used as it is --------------------------------------------------------------

def test_no_finetune_uses_a_finished_runs_teacher_as_it_is(finished_cli_run, tmp_path, monkeypatch):
    """The smoke run's own fine-tuned teacher as --teacher with --no-finetune, in a fresh artifacts directory: no
    training step runs, and the teacher's test accuracy equals that of the run it came from."""
    def no_training(*args, **kwargs):
        raise AssertionError("fine_tune ran although teacher.finetune = false")

    monkeypatch.setattr(T, "fine_tune", no_training)
    teacher = finished_cli_run / "artifacts" / "smoke" / "teacher" / "model"
    assert distill_main(cli_argv(tmp_path, teacher, "--no-finetune")) == 0
    info = json.loads((tmp_path / "artifacts" / "smoke" / "teacher" / "stage.json").read_text())["info"]
    assert info["steps"] == 0 and info["finetuned"] is False
    mine, theirs = teacher_row(tmp_path, "smoke"), teacher_row(finished_cli_run, "smoke")
    assert mine["accuracy"] == theirs["accuracy"] and mine["macro_f1"] == theirs["macro_f1"]


def _classifier(tiny_teacher_dir, labels):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_teacher_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    return AutoTokenizer.from_pretrained(tiny_teacher_dir), model.eval()


def test_label_map_reorders_the_head_to_the_datas_label_order(tiny_teacher_dir, mr_texts):
    """A teacher that calls the classes NEG/POS, in the other order (rotten first): after --label-map its logit k is
    the data's class k, so it gives the same answers as a teacher trained with the data's names."""
    tokenizer, reference = _classifier(tiny_teacher_dir, ["fresh", "rotten"])
    _, swapped = _classifier(tiny_teacher_dir, ["NEG", "POS"])
    swapped.load_state_dict(reference.state_dict())
    with torch.no_grad():
        swapped.classifier.weight.copy_(reference.classifier.weight.flip(0))
        swapped.classifier.bias.copy_(reference.classifier.bias.flip(0))
    texts = mr_texts[:40]
    T.use_as_is(swapped, ["fresh", "rotten"], T.parse_label_map("POS=fresh, NEG=rotten"))
    np.testing.assert_allclose(T.predict_logits(swapped, tokenizer, texts, 64, progress=False),
                               T.predict_logits(reference, tokenizer, texts, 64, progress=False), atol=1e-6)
    assert swapped.config.id2label == {0: "fresh", 1: "rotten"}


def test_teacher_labels_that_do_not_match_name_both_sets(tiny_teacher_dir):
    _, model = _classifier(tiny_teacher_dir, ["POS", "NEG"])
    with pytest.raises(UserError, match=r"teacher's labels \(POS, NEG\) do not match the data's \(fresh, rotten\)"
                                        r".*--label-map"):
        T.use_as_is(model, ["fresh", "rotten"], {})
    with pytest.raises(UserError, match="TEACHER_LABEL=DATA_LABEL"):
        T.parse_label_map("POS")


def test_an_encoder_without_a_classifier_head_is_refused(tmp_path, tiny_teacher_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification
    config = AutoConfig.from_pretrained(tiny_teacher_dir)
    config.architectures = ["BertModel"]
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(UserError, match="not a fine-tuned sequence classifier"):
        T.use_as_is(model, ["fresh", "rotten"], {})


# --- your own data, in a run of its own ------------------------------------------------------------------------

def _reviews_csv(path: Path, mr_texts, rows=300) -> Path:
    rng = np.random.default_rng(0)
    texts = mr_texts[:rows]
    stars = ["great" if "good" in t or rng.random() < 0.5 else "poor" for t in texts]
    pd.DataFrame({"body": texts, "stars": stars}).to_csv(path, index=False)
    return path


def test_a_csv_run_is_named_after_its_data_and_leaves_other_runs_untouched(root, tiny_teacher_dir, mr_texts, capsys):
    before = checksums(root / "artifacts" / "smoke")
    csv = _reviews_csv(root / "reviews.csv", mr_texts)
    argv = cli_argv(root, tiny_teacher_dir, "--data", str(csv), "--text-col", "body", "--label-col", "stars")
    assert distill_main(argv) == 0
    assert "run 'smoke-reviews'" in capsys.readouterr().out
    assert checksums(root / "artifacts" / "smoke") == before
    assert (root / "reports" / "smoke-reviews" / "accuracy.csv").exists()
    labels = json.loads((root / "artifacts" / "smoke-reviews" / "data" / "labels.json").read_text())
    assert labels == ["great", "poor"]

    # Pointing the CSV at another run's place by name is refused, with that run left as it was.
    assert distill_main(argv + ["--name", "smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--name" in err[0]
    assert checksums(root / "artifacts" / "smoke") == before


def test_unlabelled_text_from_a_csv_column_joins_the_transfer_set(tmp_path, mr_texts):
    from distill.transfer import read_unlabelled
    csv = _reviews_csv(tmp_path / "more.csv", mr_texts, rows=20)
    assert read_unlabelled(str(csv), "body") == [t.strip() for t in mr_texts[:20] if t.strip()]
    with pytest.raises(UserError, match="no column 'text'.*unlabelled_col"):
        read_unlabelled(str(csv), "text")


# --- your metric, your class balance ---------------------------------------------------------------------------

def test_metrics_match_scikit_learn_and_name_their_class():
    from sklearn.metrics import f1_score, precision_score, recall_score
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.6, gold, rng.integers(0, 3, 400))
    labels = ["ham", "spam", "eggs"]
    assert Metric.parse("macro_f1", labels)(gold, pred) == pytest.approx(f1_score(gold, pred, average="macro"))
    assert Metric.parse("recall:spam", labels)(gold, pred) == pytest.approx(recall_score(gold, pred, average=None)[1])
    assert Metric.parse("precision:EGGS", labels)(gold, pred) == pytest.approx(
        precision_score(gold, pred, average=None)[2])
    value, low, high = Metric.parse("recall:spam", labels).with_ci(gold, pred, 300, 0)
    assert low < value < high
    with pytest.raises(UserError, match="no class 'toast'.*ham, spam, eggs"):
        Metric.parse("recall:toast", labels)
    with pytest.raises(UserError, match="not a metric"):
        Metric.parse("auc", labels)


def test_evaluate_reports_the_chosen_metric_beside_accuracy():
    gold = np.array([0] * 90 + [1] * 10)
    majority = np.tile([0.9, 0.1], (100, 1))    # always the majority class: 90% accurate, recall of 1 is 0
    row = evaluate(gold, majority, metric=Metric.parse("recall:b", ["a", "b"]), n_resamples=200)
    assert row["accuracy"] == 0.9 and row["score"] == 0.0 and row["metric"] == "recall:b"
    assert evaluate(gold, majority, n_resamples=200)["score"] == 0.9


def test_students_early_stop_on_the_runs_metric():
    from types import SimpleNamespace

    from distill.students.torch_student import dev_score
    texts, gold = ["x"] * 10, [0] * 9 + [1]
    majority = SimpleNamespace(predict=lambda texts: np.zeros(len(texts), dtype=int), dev_metric=None)
    assert dev_score(majority, (texts, gold)) == 0.9
    majority.dev_metric = Metric.parse("recall:b", ["a", "b"])
    assert dev_score(majority, (texts, gold)) == 0.0


def test_the_frontier_and_picks_follow_the_chosen_metric():
    from bench.results import frontier, pick
    rows = pd.DataFrame({
        "model": ["teacher", "fast", "fair"], "backend": ["torch", "numpy", "numpy"], "batch_size": 1,
        "kind": ["teacher", "distilled", "distilled"], "median_ms": [10.0, 0.1, 0.2], "speedup": [1, 100, 50],
        "accuracy": [0.90, 0.89, 0.88], "metric": "macro_f1", "score": [0.80, 0.60, 0.79],
        "score_low": [0.7, 0.5, 0.7], "score_high": [0.9, 0.7, 0.9]})
    best, _ = frontier(rows)
    assert best.model == "fair"          # by accuracy alone "fast" keeps 99%; by macro-F1 only "fair" keeps 97%
    assert pick(rows, max_drop=5)[0].model == "fair"


def test_balanced_class_weights_and_their_effect_on_the_loss():
    gold = np.array([0] * 30 + [1] * 10)
    assert class_weights(gold, 2, "balanced") == pytest.approx([40 / 60, 40 / 20])
    assert class_weights(gold, 2, "none") is None
    with pytest.raises(UserError, match="balanced"):
        class_weights(gold, 2, "inverse")

    from types import SimpleNamespace

    from distill.losses import student_loss
    logits, targets = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    plain = student_loss(SimpleNamespace(class_weights=None), logits, targets, targets, 0.0)
    weighted = student_loss(SimpleNamespace(class_weights=[1.0, 3.0]), logits, targets, targets, 0.0)
    assert weighted > plain   # the mistaken minority example counts three times


def test_class_weighted_students_lean_toward_the_minority_class(mr_texts):
    from distill.students import TfidfLogisticRegression
    texts = mr_texts[:200]
    gold = np.array([1 if i % 8 == 0 else 0 for i in range(200)])
    plain = TfidfLogisticRegression(C=0.1).fit(texts, gold)
    weighted = TfidfLogisticRegression(C=0.1, class_weights=class_weights(gold, 2, "balanced")).fit(texts, gold)
    assert (weighted.predict(texts) == 1).sum() > (plain.predict(texts) == 1).sum()


def test_metric_and_class_weight_flags_reach_the_run(root, tiny_teacher_dir):
    argv = cli_argv(root, tiny_teacher_dir, "--metric", "recall:rotten", "--class-weight", "balanced",
                    "--name", "recall-run")
    assert distill_main(argv) == 0
    table = pd.read_csv(root / "reports" / "recall-run" / "accuracy.csv")
    assert set(table["metric"]) == {"recall:rotten"}
    stage = json.loads((root / "artifacts" / "recall-run" / "teacher" / "stage.json").read_text())
    assert stage["info"]["dev_metric"] == "recall:rotten" and stage["inputs"]["teacher"]["class_weight"] == "balanced"


# --- one command line ------------------------------------------------------------------------------------------

def test_mbtb_lists_every_stage_and_each_has_help(capsys):
    assert mbtb(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("distill", "ablation", "export", "bench", "report", "serve", "gate"):
        assert command in COMMANDS and f"  {command}" in out
        with pytest.raises(SystemExit) as exc:
            mbtb([command, "--help"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: mbtb {command}")
    assert mbtb(["destill"]) == 2
    assert "unknown command 'destill'" in capsys.readouterr().err


def test_help_into_a_pipe_nobody_reads_ends_quietly():
    # `mbtb --help | head -1`: the reader is gone before mbtb writes (its end of the pipe closed before the start,
    # so every write fails the same way, with no race).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "mbtb", "--help"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == ""


def test_the_installed_console_script_runs():
    script = Path(sys.executable).parent / "mbtb"
    if not script.exists():
        pytest.skip("the mbtb console script is not installed in this environment (pip install -e . installs it)")
    done = subprocess.run([str(script), "distill", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: mbtb distill" in done.stdout
