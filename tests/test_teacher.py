"""The teacher: fine-tuning a tiny random-init BERT, labelling in input order, loading errors, the saved model dir."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distill import teacher as T
from distill.errors import UserError
from distill.pipeline import Run, logits_of
from tests.conftest import make_tiny_bert, tiny_config
from tests.test_students import synthetic

CFG = dict(seed=0, max_length=32, batch_size=16, epochs=20, max_steps=80, evals_per_epoch=2, weight_decay=0.01,
           lr=5e-3, warmup=0.1, patience=50)


@pytest.fixture(scope="module")
def task():
    return synthetic(320, 0), synthetic(100, 1)


def new_bert(directory, task):
    torch.manual_seed(0)
    make_tiny_bert(directory, task[0][0], vocab_size=100)
    return T.load_pretrained(str(directory), 2, ["neg", "pos"])


@pytest.fixture()
def fresh(tmp_path, task):
    return new_bert(tmp_path / "bert", task)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, task):
    """The tiny BERT fine-tuned on the easy task, with its training loss/accuracy before and after."""
    tokenizer, model = new_bert(tmp_path_factory.mktemp("bert"), task)
    train, dev = task
    before = train_loss(model, tokenizer, train)
    metrics = T.fine_tune(model, tokenizer, train, dev, CFG, progress=False)
    return tokenizer, model, metrics, before, train_loss(model, tokenizer, train)


def train_loss(model, tokenizer, data):
    logits = torch.from_numpy(T.predict_logits(model, tokenizer, data[0], 32, progress=False))
    return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(data[1]))), \
        float(np.mean(logits.argmax(1).numpy() == data[1]))


def test_fine_tune_learns_an_easy_task(trained, task):
    tokenizer, model, metrics, (loss_before, acc_before), (loss_after, acc_after) = trained
    train, dev = task
    assert metrics["steps"] == CFG["max_steps"]
    assert loss_after < 0.6 * loss_before, (loss_before, loss_after)
    assert acc_before < 0.7 and acc_after > 0.9
    assert metrics["best_dev_accuracy"] > 0.9
    assert [h["step"] for h in metrics["history"]] == sorted(h["step"] for h in metrics["history"])
    assert metrics["device"] == "cpu" and metrics["train_seconds"] > 0
    # the best dev state is the one kept
    dev_logits = T.predict_logits(model, tokenizer, dev[0], CFG["max_length"], progress=False)
    assert float(np.mean(dev_logits.argmax(1) == dev[1])) == pytest.approx(metrics["best_dev_accuracy"])
    assert model.training is False


def test_fine_tune_stops_early_without_dev_improvement(fresh, task):
    tokenizer, model = fresh
    train, dev = task
    cfg = {**CFG, "lr": 0.0, "max_steps": 0, "epochs": 50, "evals_per_epoch": 4, "patience": 1}
    metrics = T.fine_tune(model, tokenizer, train, dev, cfg, progress=False)
    # lr 0: dev accuracy never improves after the first evaluation; patience 1 -> stop at the third evaluation
    assert len(metrics["history"]) == 3
    assert metrics["steps"] == 3 * (len(train[0]) // cfg["batch_size"] // 4)


def test_predict_logits_keeps_input_order(trained, task):
    tokenizer, model, *_ = trained
    texts = task[1][0][:25]
    texts = [texts[0] + " and " + texts[1] + " with " + texts[2]] + texts[3:]   # varied lengths
    batched = T.predict_logits(model, tokenizer, texts, 32, batch_size=4, progress=False)
    model.eval()
    with torch.no_grad():
        single = np.concatenate([model(**tokenizer([t], truncation=True, max_length=32,
                                                    return_tensors="pt")).logits.numpy() for t in texts])
    assert batched.shape == (len(texts), 2)
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert np.ptp(single[:, 1] - single[:, 0]) > 1.0        # the texts get clearly different logits
    order = np.argsort([len(t) for t in texts], kind="stable")
    assert not np.array_equal(order, np.arange(len(texts)))  # so batching by length really reorders them


def test_load_pretrained_sets_labels(fresh):
    tokenizer, model = fresh
    assert model.config.num_labels == 2
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}


@pytest.mark.parametrize("name", ["/nonexistent/model/dir", "./no-such-local-dir", "~/no-such-model-dir-xyz"])
def test_missing_directory(name):
    with pytest.raises(UserError, match="does not exist"):
        T.load_pretrained(name, 2, ["a", "b"])


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserError) as exc:
        T.load_pretrained(str(tmp_path), 2, ["a", "b"])
    assert "\n" not in str(exc.value) and str(tmp_path) in str(exc.value)


def test_unknown_model_id_offline(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as exc:
        T.load_pretrained("no-such-org/no-such-model-xyz", 2, ["a", "b"])
    message = str(exc.value)
    assert "\n" not in message
    assert "'no-such-org/no-such-model-xyz'" in message and "cannot be reached" in message and "minilm-l6" in message


def test_resolve_model_aliases(tmp_path):
    assert T.resolve_model("some-org/some-model", tmp_path) == "some-org/some-model"
    minilm = T.resolve_model("minilm-l6", tmp_path)
    assert (__import__("pathlib").Path(minilm) / "config.json").exists()


def test_pipeline_teacher_dir_reloads_and_matches_soft_labels(tmp_path, tiny_teacher_dir):
    """The teacher stage writes a normal HF model dir + tokenizer; reloading it reproduces the stored logits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    run = Run("t", tiny_config(tiny_teacher_dir), tmp_path / "artifacts", tmp_path / "reports", progress=False,
              log=lambda *_: None)
    run.build_data()
    run.build_teacher()
    run.build_labeller()
    run.build_soft_labels()
    directory = run.teacher_dir()
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert model.config.id2label == dict(enumerate(run.labels())) == {0: "fresh", 1: "rotten"}
    soft = run.soft_labels()
    assert len(soft) == len(run.split()) == 300
    assert (soft["text"] == run.split()["text"]).all()
    texts = soft["text"].tolist()[:12]
    with torch.no_grad():
        logits = np.concatenate([model(**tokenizer([t], truncation=True, max_length=run.cfg["teacher"]["max_length"],
                                                   return_tensors="pt")).logits.numpy() for t in texts])
    np.testing.assert_allclose(logits, soft[["logit_0", "logit_1"]].to_numpy()[:12], atol=1e-4)
    train_logits = logits_of(soft, "train")
    assert train_logits.shape == (240, 2) and train_logits.dtype == np.float32
    info = run.stage_info("teacher")
    assert info["steps"] == 6 and info["params"] == sum(p.numel() for p in model.parameters())


def test_the_same_config_fine_tunes_the_same_teacher_bit_for_bit(tmp_path, mr_texts):
    """A pretrained encoder without a classification head (as MiniLM ships): the head is drawn at load time, so the
    seed must be set before it. Two runs, with the global RNG left in different states, give identical weights."""
    import hashlib
    from transformers import BertConfig, BertModel
    encoder = make_tiny_bert(tmp_path / "tiny", mr_texts)
    BertModel(BertConfig.from_pretrained(encoder)).save_pretrained(tmp_path / "encoder")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (encoder / name).exists():
            (tmp_path / "encoder" / name).write_bytes((encoder / name).read_bytes())
    digests, soft = [], []
    for attempt in range(2):
        torch.manual_seed(1000 + attempt)
        run = Run("tiny", tiny_config(tmp_path / "encoder"), tmp_path / f"artifacts{attempt}",
                  tmp_path / f"reports{attempt}", progress=False, log=lambda *_: None)
        run.build_data()
        run.build_teacher()
        run.build_labeller()
        run.build_soft_labels()
        digests.append(hashlib.sha256((run.teacher_dir() / "model.safetensors").read_bytes()).hexdigest())
        soft.append(run.soft_labels())
    assert digests[0] == digests[1]
    assert soft[0].equals(soft[1])


KILL_OVERRIDES = ["teacher.max_steps=150", "teacher.evals_per_epoch=4", "teacher.patience=1000"]


def test_kill_9_during_the_fine_tune_resumes_from_the_checkpoint(tmp_path, tiny_teacher_dir):
    """A real `python -m distill` killed with SIGKILL once its first checkpoint exists; the same command resumes
    from that checkpoint (and says so), and its accuracy.csv equals an uninterrupted run's byte for byte."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import pandas as pd

    from tests.conftest import cli_argv

    repo = Path(__file__).resolve().parent.parent
    extra = [a for o in KILL_OVERRIDES for a in ("--set", o)]

    def command(root):
        return [sys.executable, "-m", "distill", *cli_argv(root, tiny_teacher_dir, *extra, students="tfidf_lr")]

    whole = subprocess.run(command(tmp_path / "whole"), cwd=repo, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "artifacts" / "smoke" / ".teacher.partial" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and checkpoint.exists(), "the run ended before its first checkpoint"
    resumed = subprocess.run(command(killed), cwd=repo, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "teacher: resuming from the checkpoint at step" in resumed.stdout
    assert not checkpoint.parent.exists()                     # removed once the stage is done
    tables = [pd.read_csv(root / "reports" / "smoke" / "accuracy.csv", dtype=str).drop(columns="train_seconds")
              for root in (tmp_path / "whole", killed)]
    assert tables[0].to_csv() == tables[1].to_csv()   # every accuracy column, as written, byte for byte
