"""Issue 27, part 1: several transformer students in one run, each kind (a uniform cut of the teacher, a bottom cut,
a pretrained encoder with its own tokenizer and width) through training -> export -> validation -> bench -> serve ->
`mbtb package`, with tiny models built here: a 6-layer, 32-wide teacher and a 4-layer, 48-wide base encoder with
another vocabulary."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.export import export_all
from bench.zoo import load_variant
from distill.config import apply_overrides, fingerprint, load_profile
from distill.errors import UserError
from distill.families.manifest import read_manifest
from distill.pipeline import Run
from distill.student_stage import student_inputs
from distill.students import REGISTRY, TransformerClassifier, outside_files
from distill.students.transformer import initial_model
from distill.teacher import load_pretrained
from serve import load_run
from ship.__main__ import main as package_main
from ship.runtime.predict import Classifier
from tests.conftest import make_tiny_bert, tiny_config
from tests.test_frontier import TRANSFORMER_BACKENDS, bench_cases

STUDENTS = ["transformer", "transformer_small", "small_encoder"]
LOSSLESS = 1e-4   # fp32 exports of a tiny model agree far closer than this; int8 ones answer to their tolerance
TEXTS = ["a gorgeous witty movie", "the plot never takes off", "charming and affecting", "dull and routine"] * 4
GOLD = np.array([0, 1, 0, 1] * 4)


def resave(directory: Path, model_class, **config_changes) -> Path:
    """The tiny BERT at `directory` with its configuration changed and new random weights (varied outputs)."""
    from transformers import BertConfig
    config = BertConfig.from_pretrained(directory)
    for key, value in {"initializer_range": 0.3, **config_changes}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model_class(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, mr_texts) -> Path:
    from transformers import BertForSequenceClassification
    directory = make_tiny_bert(tmp_path_factory.mktemp("teacher6"), mr_texts)
    return resave(directory, BertForSequenceClassification, num_hidden_layers=6)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, mr_texts) -> Path:
    """A pretrained encoder as sentence-transformers ship them (no classification head): 4 layers, 48 wide, a
    300-word vocabulary of other texts."""
    from transformers import BertModel
    directory = make_tiny_bert(tmp_path_factory.mktemp("base"), mr_texts[1000:], vocab_size=300)
    return resave(directory, BertModel, num_hidden_layers=4, hidden_size=48, intermediate_size=96)


@pytest.fixture(scope="module")
def run(tmp_path_factory, teacher_dir, base_dir) -> Run:
    """One tiny run training the three transformer students side by side, every variant exported; the bottom cut
    keeps half of its feed-forward neurons (ffn_keep), so a pruned student goes through every backend too."""
    root = tmp_path_factory.mktemp("students")
    fast = [f"students.{name}.{key}={value}" for name in STUDENTS
            for key, value in (("max_steps", 6), ("max_length", 24), ("lr", 1e-3))]
    cfg = tiny_config(teacher_dir, [
        f"students.names={json.dumps(STUDENTS)}", "students.ensemble=[]", 'students.modes=["distilled"]',
        "teacher.lr=1e-5", *fast,
        "students.transformer.layers=3", 'students.transformer.layer_choice="uniform"',
        "students.transformer_small.layers=2", 'students.transformer_small.layer_choice="bottom"',
        "students.transformer_small.ffn_keep=0.5",
        f'students.small_encoder.base="{base_dir}"', "students.small_encoder.layers=2",
        'students.small_encoder.layer_choice="uniform"'])
    run = Run("students", cfg, root / "artifacts", root / "reports", progress=False, log=lambda *_: None)
    run.all()
    export_all(run, [f"{name}-distilled" for name in STUDENTS], log=lambda *_: None, progress=False)
    return run


def vocabulary(directory: Path) -> dict:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(directory).get_vocab()


# --- several names, one class ---------------------------------------------------------------------------------------
def test_two_names_of_one_class_are_two_students_with_their_own_depths_and_keys(run):
    assert REGISTRY["transformer"] is REGISTRY["transformer_small"] is REGISTRY["small_encoder"]
    models = run.models()
    assert [m for m in models if m != "teacher"] == [f"{name}-distilled" for name in STUDENTS]
    deep, small = models["transformer-distilled"], models["transformer_small-distilled"]
    assert (deep.module_.config.num_hidden_layers, deep.teacher_layer_ids_) == (3, [0, 2, 4])
    assert (small.module_.config.num_hidden_layers, small.teacher_layer_ids_) == (2, [0, 1])
    assert (deep.module_.config.intermediate_size, small.module_.config.intermediate_size) == (64, 32)
    keys = {run.key(f"students/{name}-distilled") for name in STUDENTS}
    assert len(keys) == 3 and None not in keys


def test_a_mistyped_student_name_or_key_gets_a_suggestion():
    profile = load_profile("default")
    with pytest.raises(UserError, match="no section 'transformer_smal' .*did you mean 'transformer_small'"):
        apply_overrides(profile, ["students.transformer_smal.layers=1"])
    with pytest.raises(UserError, match="unknown key 'bse' .did you mean 'base'"):
        apply_overrides(profile, ['ablation.small_encoder.bse="minilm-l6"'])
    with pytest.raises(UserError, match="init must be one of teacher, scratch, fresh, pretrained, not 'pretrain'"):
        apply_overrides(profile, ['students.small_encoder.init="pretrain"'])


# --- the pretrained base -----------------------------------------------------------------------------------------
def test_the_pretrained_student_is_its_base_cut_under_a_fresh_head(run, teacher_dir, base_dir):
    from transformers import BertForSequenceClassification
    student = run.models()["small_encoder-distilled"]
    assert student.tokenizer_.get_vocab() == vocabulary(base_dir) != vocabulary(teacher_dir)
    assert student.module_.config.hidden_size == 48 and student.teacher_layer_ids_ == [0, 2]
    assert student.module_.config.id2label == load_pretrained(str(run.teacher_dir()))[1].config.id2label
    tokenizer, teacher = load_pretrained(str(teacher_dir))
    torch.manual_seed(0)
    base = BertForSequenceClassification.from_pretrained(base_dir, num_labels=2)   # a base with a head of its own
    cut, ids = initial_model(teacher, tokenizer, 2, "pretrained", "uniform", base)
    source, copied = base.state_dict(), cut.state_dict()
    assert ids == [0, 2] and torch.equal(copied["bert.encoder.layer.1.output.dense.weight"],
                                         source["bert.encoder.layer.2.output.dense.weight"])
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(copied[word], source[word])
    assert torch.equal(student.module_.state_dict()[word], source[word])   # trained with them frozen
    assert not torch.equal(copied["classifier.weight"], source["classifier.weight"])


def test_a_local_base_joins_the_stage_key_and_an_alias_or_a_teacher_cut_adds_nothing(run, base_dir):
    inputs = student_inputs(run, "small_encoder", "distilled")
    assert str((base_dir / "config.json").resolve()) in [path for path, _, _ in inputs["files"]]
    before = fingerprint(inputs)
    config = base_dir / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # the base saved again
    try:
        assert fingerprint(student_inputs(run, "small_encoder", "distilled")) != before
    finally:
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "files" not in student_inputs(run, "transformer", "distilled")
    assert outside_files("small_encoder", {"init": "pretrained", "base": "minilm-l6"}) is None


def test_hidden_states_across_widths_need_the_teacher_s_tokens(tmp_path, teacher_dir, base_dir, mr_texts):
    """A base with the teacher's vocabulary but another width learns the teacher's hidden states through a
    projection; a base that tokenizes differently is refused before training."""
    from transformers import BertModel
    same_tokens = resave(make_tiny_bert(tmp_path / "same-vocab", mr_texts), BertModel, hidden_size=48,
                         intermediate_size=96)
    logits = np.where(GOLD[:, None] == np.arange(2), 2.0, -2.0).astype(np.float32)
    common = {"teacher": str(teacher_dir), "init": "pretrained", "layers": 1, "max_steps": 2, "batch_size": 8,
              "max_length": 16, "hidden_weight": 1.0, "progress": False}
    est = TransformerClassifier(base=str(same_tokens), **common).fit(TEXTS, logits)
    assert est.module_.config.hidden_size == 48 and est.predict_proba(TEXTS[:3]).shape == (3, 2)
    with pytest.raises(UserError, match="tokenizes text differently from the teacher; set hidden_weight = 0"):
        TransformerClassifier(base=str(base_dir), **common).fit(TEXTS, logits)


def test_a_base_needs_the_pretrained_init_and_the_pretrained_init_needs_a_base(teacher_dir, base_dir):
    with pytest.raises(UserError, match='needs `base`: an alias'):
        TransformerClassifier(teacher=str(teacher_dir), init="pretrained", progress=False).fit(TEXTS, GOLD)
    with pytest.raises(UserError, match='is read only with init = "pretrained"'):
        TransformerClassifier(teacher=str(teacher_dir), base=str(base_dir), progress=False).fit(TEXTS, GOLD)
    with pytest.raises(UserError, match="cannot be cut from a 4-layer base"):
        TransformerClassifier(teacher=str(teacher_dir), init="pretrained", base=str(base_dir), layers=5,
                              progress=False).fit(TEXTS, GOLD)


# --- export, validation, bench, serve, package ----------------------------------------------------------------
def test_every_kind_exports_validates_benches_and_serves(run, base_dir, teacher_dir, tmp_path):
    manifest = {(v.model, v.backend): v.row() for v in read_manifest(run.dir).variants}
    texts = run.split()["text"].tolist()[:20]
    models = run.models()
    for name in STUDENTS:
        model_id = f"{name}-distilled"
        assert {b for m, b in manifest if m == model_id} == TRANSFORMER_BACKENDS
        source = models[model_id].predict_proba(texts)
        assert np.ptp(source[:, 1]) > 1e-3, "the source must answer differently for different texts"
        for backend in TRANSFORMER_BACKENDS - {"torch"}:
            entry = manifest[(model_id, backend)]
            assert entry["status"] == "ok", (model_id, backend, entry.get("error"))
            probs = load_variant(run, model_id, backend, models).predict_proba(texts)
            assert np.abs(probs - source).max() <= (entry["tolerance"] or LOSSLESS), (model_id, backend)
    # the tokenizer that travels with each export is the student's own
    exported = run.dir / "export" / "small_encoder-distilled"
    assert vocabulary(exported / "onnx") == vocabulary(exported / "torchscript") == vocabulary(base_dir)
    assert vocabulary(run.dir / "export" / "transformer_small-distilled" / "onnx") == vocabulary(teacher_dir)

    cases = bench_cases(run, "^(transformer|transformer_small|small_encoder)-distilled/onnx$", tmp_path / "b.json")
    assert set(cases) - {("harness", "noop")} == {(f"{name}-distilled", "onnx") for name in STUDENTS}
    lines = []
    served = load_run(run, log=lines.append, backends=("onnx-int8",))
    assert served.missing == []
    assert {f"{name}-distilled/{b}" for name in STUDENTS for b in ("torch", "onnx-int8")} <= {
        p.name for p in served.predictors}


def test_a_pretrained_student_packages_with_its_own_tokenizer(run, base_dir, tmp_path):
    from tokenizers import Tokenizer
    out = tmp_path / "small_encoder"
    assert package_main(["small_encoder-distilled/onnx-int8", "--out", str(out), "--name", run.profile,
                         "--artifacts", str(run.dir.parent), "--reports", str(run.reports.parent)]) == 0
    assert Tokenizer.from_file(str(out / "hf" / "tokenizer.json")).get_vocab() == vocabulary(base_dir)
    texts = run.split()["text"].tolist()[:12]
    packaged = Classifier.load(out).predict_proba(texts)
    exported = load_variant(run, "small_encoder-distilled", "onnx-int8").predict_proba(texts)
    assert np.abs(packaged - exported).max() <= LOSSLESS
