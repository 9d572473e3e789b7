"""The transformer student: initialised from the teacher's layers, trainable on labels or logits, a plain estimator."""
import joblib
import numpy as np
import pytest
import torch

from distill.errors import UserError
from distill.students import REGISTRY, BornAgainClassifier, TransformerClassifier, build
from distill.students.transformer import hidden_state_pairs, initial_model, teacher_layer_ids
from distill.teacher import load_pretrained

TEXTS = ["a gorgeous witty movie", "the plot never takes off", "charming and affecting", "dull and routine",
         "a delight from start to finish", "strictly by the numbers"] * 4
GOLD = np.array([0, 1, 0, 1, 0, 1] * 4)


@pytest.fixture(scope="module")
def four_layer_teacher(tmp_path_factory, mr_texts):
    """A 4-layer tiny BERT (random init) saved like a fine-tuned teacher."""
    from transformers import BertConfig, BertForSequenceClassification

    from tests.conftest import make_tiny_bert
    directory = make_tiny_bert(tmp_path_factory.mktemp("teacher4"), mr_texts[:300])
    config = BertConfig.from_pretrained(directory)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def layer(model, i):
    return {k: v for k, v in model.base_model.encoder.layer[i].state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("choice, expected", [("bottom", [0, 1]), ("uniform", [0, 2])])
def test_student_layers_equal_the_teachers_after_init(four_layer_teacher, choice, expected):
    tokenizer, teacher = load_pretrained(str(four_layer_teacher))
    student, ids = initial_model(teacher, tokenizer, 2, "teacher", choice)
    assert ids == expected and student.config.num_hidden_layers == 2
    for j, i in enumerate(expected):
        assert same(layer(student, j), layer(teacher, i))
    assert same(student.base_model.embeddings.state_dict(), teacher.base_model.embeddings.state_dict())
    assert same(student.classifier.state_dict(), teacher.classifier.state_dict())
    assert same(student.base_model.pooler.state_dict(), teacher.base_model.pooler.state_dict())


def test_fresh_and_scratch_inits_are_random(four_layer_teacher):
    tokenizer, teacher = load_pretrained(str(four_layer_teacher))
    fresh, _ = initial_model(teacher, tokenizer, 2, "fresh")
    assert fresh.config.hidden_size == teacher.config.hidden_size
    query = "attention.self.query.weight"
    assert not torch.equal(layer(fresh, 0)[query], layer(teacher, 0)[query])
    scratch, ids = initial_model(teacher, tokenizer, 2, "scratch")
    assert ids is None and scratch.config.hidden_size == 128 and scratch.config.num_hidden_layers == 2
    assert scratch.config.vocab_size == len(tokenizer)


def test_born_again_is_a_full_copy_of_the_teacher(four_layer_teacher):
    est = BornAgainClassifier(teacher=str(four_layer_teacher), epochs=0, progress=False).fit(TEXTS, GOLD)
    _, teacher = load_pretrained(str(four_layer_teacher))
    assert est.teacher_layer_ids_ == [0, 1, 2, 3]
    assert same(est.module_.state_dict(), teacher.state_dict())
    assert REGISTRY["born_again"] is BornAgainClassifier


def test_fits_labels_logits_annealing_and_hidden_state_loss(four_layer_teacher, tmp_path):
    logits = np.where(GOLD[:, None] == np.arange(2), 2.0, -2.0).astype(np.float32)
    common = {"teacher": str(four_layer_teacher), "layers": 2, "max_steps": 3, "batch_size": 8, "lr": 1e-3,
              "max_length": 16, "progress": False}
    for est, y, kwargs in [
        (TransformerClassifier(**common), GOLD, {}),
        (TransformerClassifier(**common, loss="kl"), logits, {"eval_set": (TEXTS[:6], GOLD[:6])}),
        (TransformerClassifier(**common, anneal=True), logits, {"hard_labels": GOLD}),
        (TransformerClassifier(**common, init="scratch", hidden_weight=1.0), logits, {}),
    ]:
        tokenizer, teacher = load_pretrained(str(four_layer_teacher))
        before = {k: v.clone() for k, v in initial_model(teacher, tokenizer, 2, est.init)[0].state_dict().items()}
        est.fit(TEXTS, y, **kwargs)
        proba = est.predict_proba(TEXTS[:5])
        assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
        assert set(est.predict(TEXTS)) <= {0, 1}
        if est.init == "teacher":  # it trained: some weight moved away from the copied initial value ...
            after = est.module_.state_dict()
            assert any(not torch.equal(before[k], after[k]) for k in before)
            word = "bert.embeddings.word_embeddings.weight"  # ... but not the frozen word embeddings
            assert torch.equal(before[word], after[word])
    path = tmp_path / "student.joblib"
    joblib.dump(est, path)
    assert np.allclose(joblib.load(path).predict_proba(TEXTS), est.predict_proba(TEXTS), atol=1e-6)
    learned = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    assert {"module_", "tokenizer_", "classes_", "teacher_layer_ids_"} <= set(learned)


def test_registry_builds_it_from_profile_params():
    est = build("transformer", {"layers": 2, "init": "scratch"})
    assert isinstance(est, TransformerClassifier) and est.get_params()["layers"] == 2
    with pytest.raises(UserError, match="student transformer has no parameter 'layer'.*did you mean 'layers'"):
        build("transformer", {"layer": 2})


def test_hidden_state_pairs_match_relative_depth():
    assert hidden_state_pairs(2, 4) == [(1, 2), (2, 4)]
    assert hidden_state_pairs(3, 6) == [(1, 2), (2, 4), (3, 6)]


def test_bad_settings_are_user_errors(four_layer_teacher):
    with pytest.raises(UserError, match="cannot be cut"):
        teacher_layer_ids(4, 5, "bottom")
    with pytest.raises(UserError, match="layer_choice"):
        teacher_layer_ids(4, 2, "top")
    with pytest.raises(UserError, match="unknown init"):
        TransformerClassifier(teacher=str(four_layer_teacher), init="magic", progress=False).fit(TEXTS, GOLD)
    with pytest.raises(UserError, match="needs its teacher"):
        TransformerClassifier(progress=False).fit(TEXTS, GOLD)
    with pytest.raises(UserError, match="2 classes, the data 3"):
        TransformerClassifier(teacher=str(four_layer_teacher), progress=False).fit(TEXTS, np.arange(24) % 3)
