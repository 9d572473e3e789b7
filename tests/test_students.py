"""Students: fit/predict/predict_proba on hard labels and on teacher logits, the scikit-learn API, the soft-target
expansion, learning an easy task, and the averaging ensemble."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from distill import students as zoo
from distill.errors import UserError
from distill.students import (AveragingEnsemble, BiLSTMClassifier, TfidfLogisticRegression, TfidfNaiveBayes,
                              TfidfRidge, WordCNNClassifier)
from distill.students.soft import expand_soft_targets, softmax
from tests.word_bag_student import WordBag

POS = ["good", "great", "excellent", "wonderful", "superb", "brilliant", "moving", "delightful"]
NEG = ["bad", "awful", "terrible", "dreadful", "poor", "boring", "tedious", "clumsy"]
FILL = "the a movie film plot actor scene story was is and of it this that with from its by an".split()


def synthetic(n: int, seed: int):
    """Sentences of neutral filler with one or two polar words: separable by a bag of words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILL, int(rng.integers(4, 12))))
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(POS if label else NEG)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def teacher_logits(labels, seed=0):
    """A confident but not one-hot teacher: logits +-2 around the gold class, with noise."""
    rng = np.random.default_rng(seed)
    logits = np.zeros((len(labels), 2), dtype=np.float32)
    logits[np.arange(len(labels)), labels] = 2.0
    return logits + rng.normal(0, 0.5, logits.shape).astype(np.float32)


TRAIN = synthetic(240, 0)
TEST = synthetic(200, 1)

STUDENTS = {
    "tfidf_lr": lambda: TfidfLogisticRegression(),
    "tfidf_ridge": lambda: TfidfRidge(),
    "nb": lambda: TfidfNaiveBayes(),
    "bilstm-random": lambda: BiLSTMClassifier(embedding="random", hidden=16, epochs=4, batch_size=32, lr=1e-2,
                                              progress=False),
    "bilstm-glove": lambda: BiLSTMClassifier(embedding="glove-50d", hidden=16, epochs=4, batch_size=32, lr=1e-2,
                                             progress=False),
    "cnn-random": lambda: WordCNNClassifier(embedding="random", widths=(2, 3), filters=8, hidden=16, epochs=4,
                                            batch_size=32, lr=1e-2, progress=False),
    "wordbag": lambda: WordBag(epochs=8, progress=False),   # the student added in one file (see the last test)
}


@pytest.mark.parametrize("target", ["hard", "logits"])
@pytest.mark.parametrize("name", list(STUDENTS))
def test_student_fits_predicts_and_learns(name, target):
    est = STUDENTS[name]()
    texts, gold = TRAIN
    y = gold if target == "hard" else teacher_logits(gold)
    assert est.fit(texts, y) is est
    np.testing.assert_array_equal(est.classes_, [0, 1])
    test_texts, test_gold = TEST
    proba = est.predict_proba(test_texts)
    assert proba.shape == (len(test_texts), 2)
    assert np.all(proba >= 0) and np.all(proba <= 1)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    pred = est.predict(test_texts)
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    accuracy = float(np.mean(pred == test_gold))
    assert accuracy > 0.9, f"{name} on {target} targets: accuracy {accuracy:.3f} on an easy separable task"


@pytest.mark.parametrize("name", list(STUDENTS))
def test_sklearn_api(name):
    est = STUDENTS[name]()
    params = est.get_params()
    assert params and all(hasattr(est, k) for k in params)
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    changed = {"C": 1.5, "alpha": 0.7, "hidden": 8, "max_features": 50}
    key = next(k for k in changed if k in params)
    assert est.set_params(**{key: changed[key]}) is est
    assert est.get_params()[key] == changed[key]
    assert clone(est).get_params()[key] == changed[key]
    with pytest.raises(ValueError):
        est.set_params(no_such_parameter=1)


@pytest.mark.parametrize("name", ["tfidf_lr", "tfidf_ridge", "nb", "bilstm-random", "cnn-random", "wordbag"])
def test_clone_of_fitted_student_is_unfitted_and_refits_identically(name):
    est = STUDENTS[name]().fit(*TRAIN)
    twin = clone(est)
    assert not hasattr(twin, "classes_")
    np.testing.assert_allclose(twin.fit(*TRAIN).predict_proba(TEST[0]), est.predict_proba(TEST[0]), atol=1e-6)


def test_three_classes_hard_and_soft():
    texts = [f"{w} {f}" for w in ("red", "green", "blue") for f in FILL[:12]]
    labels = np.repeat([0, 1, 2], 12)
    logits = np.eye(3, dtype=np.float32)[labels] * 3
    for est in (TfidfLogisticRegression(), TfidfRidge(), TfidfNaiveBayes(),
                BiLSTMClassifier(embedding="random", hidden=8, epochs=8, lr=2e-2, batch_size=8, progress=False)):
        for y in (labels, logits):
            proba = clone(est).fit(texts, y).predict_proba(["blue movie", "red film", "green plot"])
            assert proba.shape == (3, 3)
            np.testing.assert_allclose(proba.sum(1), 1, atol=1e-6)
            assert proba.argmax(1).tolist() == [2, 0, 1], type(est).__name__


# --- soft targets ------------------------------------------------------------------------------------------------
def test_expand_soft_targets_rows_labels_weights():
    X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]))
    probs = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    Xs, ys, ws = expand_soft_targets(X, probs)
    # row i repeated for every class k with weight p_ik; zero-probability pairs are dropped
    expected = [(i, k, probs[i, k]) for k in range(3) for i in range(3) if probs[i, k] > 0]
    assert ys.tolist() == [k for _, k, _ in expected]
    np.testing.assert_allclose(ws, [w for *_, w in expected])
    np.testing.assert_allclose(Xs.toarray(), X.toarray()[[i for i, _, _ in expected]])
    # dense input works the same way
    Xd, yd, wd = expand_soft_targets(X.toarray(), probs)
    np.testing.assert_allclose(Xd, Xs.toarray())
    assert yd.tolist() == ys.tolist() and np.allclose(wd, ws)


def test_weighted_log_loss_of_expansion_equals_soft_cross_entropy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 4))
    probs = softmax(rng.normal(size=(7, 3)) * 2)
    W, b = rng.normal(size=(4, 3)), rng.normal(size=3)

    def log_q(features):
        return np.log(softmax(features @ W + b))

    soft_ce = -(probs * log_q(X)).sum()
    Xs, ys, ws = expand_soft_targets(X, probs)
    weighted = -(ws * log_q(Xs)[np.arange(len(ys)), ys]).sum()
    assert weighted == pytest.approx(soft_ce, rel=1e-12)


def test_tfidf_lr_on_logits_minimises_soft_cross_entropy():
    """The distilled LR equals the minimiser of sum_i CE(softmax(teacher_i / T), sigmoid(w.x_i + b)) + ||w||^2 / 2C,
    found here independently with L-BFGS."""
    texts, gold = synthetic(40, 3)
    logits = teacher_logits(gold, seed=3) * 0.5
    est = TfidfLogisticRegression(C=2.0, temperature=2.0, max_iter=5000).fit(texts, logits)
    X = est.transform(texts).toarray()
    p = softmax(logits, 2.0)[:, 1]

    def objective(theta):
        w, b = theta[:-1], theta[-1]
        z = X @ w + b
        ce = np.sum(p * np.logaddexp(0, -z) + (1 - p) * np.logaddexp(0, z))
        grad_z = 1 / (1 + np.exp(-z)) - p
        return 0.5 * w @ w / 2.0 + ce, np.append(w / 2.0 + X.T @ grad_z, grad_z.sum())

    theta = minimize(objective, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B",
                     options={"gtol": 1e-10, "maxiter": 10_000}).x
    expected = 1 / (1 + np.exp(-(X @ theta[:-1] + theta[-1])))
    np.testing.assert_allclose(est.predict_proba(texts)[:, 1], expected, atol=1e-3)
    # and it is not just the hard-label fit
    hard = TfidfLogisticRegression(C=2.0).fit(texts, gold).predict_proba(texts)[:, 1]
    assert np.abs(hard - expected).max() > 0.01


def test_naive_bayes_on_logits_uses_fractional_counts():
    texts, gold = synthetic(30, 4)
    logits = teacher_logits(gold, seed=4)
    est = TfidfNaiveBayes(temperature=1.5).fit(texts, logits)
    X = est.transform(texts).toarray()
    probs = softmax(logits, 1.5)
    np.testing.assert_allclose(est.model_.class_count_, probs.sum(0), rtol=1e-6)
    np.testing.assert_allclose(est.model_.feature_count_, probs.T @ X, rtol=1e-6, atol=1e-9)


def test_ridge_on_logits_regresses_the_logits():
    texts, gold = synthetic(60, 5)
    logits = teacher_logits(gold, seed=5)
    est = TfidfRidge(alpha=1e-3).fit(texts, logits)
    scores = est.model_.predict(est.transform(texts))
    np.testing.assert_allclose(scores, logits, atol=0.05)   # near-interpolation with a tiny penalty
    np.testing.assert_allclose(est.predict_proba(texts), softmax(scores), atol=1e-9)


def test_lr_on_logits_matches_sklearn_with_sample_weights():
    texts, gold = synthetic(50, 6)
    logits = teacher_logits(gold, seed=6)
    est = TfidfLogisticRegression(C=3.0).fit(texts, logits)
    Xs, ys, ws = expand_soft_targets(est.transform(texts), softmax(logits))
    ref = LogisticRegression(C=3.0, max_iter=2000).fit(Xs, ys, sample_weight=ws)
    np.testing.assert_allclose(est.predict_proba(texts), ref.predict_proba(est.transform(texts)), atol=1e-6)


# --- BiLSTM specifics --------------------------------------------------------------------------------------------
def test_bilstm_glove_initialises_embeddings():
    from distill.students.bilstm import load_glove
    est = BiLSTMClassifier(embedding="glove-50d", hidden=8, epochs=0, progress=False).fit(*TRAIN)
    assert est.embedding_coverage_ == 1.0                  # every word of the synthetic set is in GloVe
    words, vectors = load_glove()
    row = words.index("excellent")
    np.testing.assert_allclose(est.module_.embedding.weight[est.vocab_["excellent"]].detach().numpy(),
                               vectors[row], rtol=1e-6)
    rand = BiLSTMClassifier(embedding="random", hidden=8, epochs=0, progress=False).fit(*TRAIN)
    assert rand.embedding_coverage_ == 0
    assert not np.allclose(rand.module_.embedding.weight[rand.vocab_["excellent"]].detach().numpy(), vectors[row])


def test_bilstm_teacher_embeddings_are_the_teachers_model2vec_vectors(tiny_teacher_dir):
    from tokenizers import Tokenizer

    from distill.students.static import teacher_static_embeddings
    est = BiLSTMClassifier(embedding="teacher", teacher=str(tiny_teacher_dir), pca_dims=8, hidden=8, epochs=0,
                           progress=False).fit(*TRAIN)
    table, tokenizer_json = teacher_static_embeddings(tiny_teacher_dir, 8)
    assert est.module_.embedding.weight.shape == (len(est.vocab_), 8) and est.embedding_coverage_ == 1.0
    pieces = Tokenizer.from_str(tokenizer_json).encode("excellent", add_special_tokens=False).ids
    np.testing.assert_allclose(est.module_.embedding.weight[est.vocab_["excellent"]].detach().numpy(),
                               table[pieces].mean(axis=0), rtol=1e-5, atol=1e-7)
    with pytest.raises(UserError, match="needs the teacher"):
        BiLSTMClassifier(embedding="teacher", epochs=0, progress=False).fit(*TRAIN)
    with pytest.raises(UserError, match="unknown embedding 'word2vec'"):
        BiLSTMClassifier(embedding="word2vec", epochs=0, progress=False).fit(*TRAIN)


def test_teacher_static_embeddings_are_kept_between_processes(tiny_teacher_dir, tmp_path, monkeypatch, caplog):
    """With `memory`, a later process reads the distilled table back instead of running the teacher over its whole
    vocabulary again; what it cannot read back it distils again."""
    import model2vec.distill

    from distill.students import static
    memory = tmp_path / "cache"
    table, tokenizer_json = static.teacher_static_embeddings(tiny_teacher_dir, 8, memory)
    stored = [p for p in memory.rglob("output.pkl")]
    assert len(stored) == 1
    static._cached_distillation.cache_clear()   # as in a new process

    def no_distillation(*args, **kwargs):
        raise AssertionError("distilled again although the table was stored")
    monkeypatch.setattr(model2vec.distill, "distill", no_distillation)
    again, again_json = static.teacher_static_embeddings(tiny_teacher_dir, 8, memory)
    np.testing.assert_array_equal(again, table)
    assert again_json == tokenizer_json

    monkeypatch.undo()
    stored[0].write_bytes(stored[0].read_bytes()[:100])   # a truncated cache file
    static._cached_distillation.cache_clear()
    with caplog.at_level("WARNING", logger="joblib"):
        rebuilt, _ = static.teacher_static_embeddings(tiny_teacher_dir, 8, memory)
    assert "Exception while loading results" in caplog.text
    np.testing.assert_allclose(rebuilt, table, rtol=1e-5, atol=1e-7)
    static._cached_distillation.cache_clear()
    monkeypatch.setattr(model2vec.distill, "distill", no_distillation)
    np.testing.assert_array_equal(static.teacher_static_embeddings(tiny_teacher_dir, 8, memory)[0], rebuilt)


def test_stored_tables_of_retrained_teachers_are_pruned(tiny_teacher_dir, tmp_path, monkeypatch):
    """Each retraining of the teacher at the same path stores a new table; only the KEPT_TABLES most recently used
    stay on disk, the current one among them."""
    from distill.students import static
    monkeypatch.setattr(static, "KEPT_TABLES", 2)
    memory = tmp_path / "cache"
    teacher = shutil.copytree(tiny_teacher_dir, tmp_path / "teacher")
    weights = next(Path(teacher).glob("*.safetensors"))
    for retrain in range(4):
        os.utime(weights, ns=(retrain * 10**9, retrain * 10**9))   # as if saved again: a new stamp, a new key
        current, _ = static.teacher_static_embeddings(teacher, 8, memory)
    assert len(list(memory.rglob("output.pkl"))) == 2
    static._cached_distillation.cache_clear()
    monkeypatch.setattr("model2vec.distill.distill", lambda *a, **k: pytest.fail("the current table was pruned"))
    np.testing.assert_array_equal(static.teacher_static_embeddings(teacher, 8, memory)[0], current)


@pytest.mark.parametrize("loss", ["mse", "kl", "mix"])
def test_bilstm_distillation_losses(loss):
    texts, gold = TRAIN
    est = BiLSTMClassifier(embedding="random", hidden=16, epochs=4, batch_size=32, lr=1e-2, loss=loss,
                           progress=False)
    est.fit(texts, teacher_logits(gold), hard_labels=gold if loss == "mix" else None)
    assert np.mean(est.predict(TEST[0]) == TEST[1]) > 0.9


def test_bilstm_mix_without_hard_labels_is_an_error():
    texts, gold = synthetic(20, 0)
    est = BiLSTMClassifier(embedding="random", hidden=8, epochs=1, loss="mix", progress=False)
    with pytest.raises(ValueError, match="hard_labels"):
        est.fit(texts, teacher_logits(gold))


def test_bilstm_early_stopping_keeps_best_dev_state():
    """A dev set with flipped labels gets worse as training succeeds: patience=0 must stop at the second evaluation
    and keep the first epoch's weights."""
    flipped_dev = (TEST[0], 1 - np.asarray(TEST[1]))
    est = BiLSTMClassifier(embedding="random", hidden=16, epochs=5, batch_size=32, lr=1e-2, patience=0,
                           progress=False)
    est.fit(*TRAIN, eval_set=flipped_dev)
    assert len(est.history_) == 2 and est.history_[1] <= est.history_[0]
    assert np.mean(est.predict(flipped_dev[0]) == flipped_dev[1]) == pytest.approx(est.history_[0])


def test_an_interrupted_fit_resumes_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    """A fit killed mid-epoch after a time-based checkpoint (here one every step) resumes at that step and ends with
    the weights and dev history of the fit never interrupted; another fit's checkpoint is not resumed."""
    from distill import training_loop as loop

    def make(epochs=2):
        return BiLSTMClassifier(embedding="random", hidden=16, epochs=epochs, batch_size=32, lr=1e-2, progress=False)
    whole = make().fit(*TRAIN, eval_set=TEST)

    class Killed(Exception):
        pass

    def save_then_die_at_step_5(path, state):
        honest_save(path, state)
        if state["at"]["step"] == 5:    # 8 steps an epoch: mid-epoch, no evaluation due
            raise Killed
    honest_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", save_then_die_at_step_5)
    monkeypatch.setattr(BiLSTMClassifier, "checkpoint_seconds", 0.0)
    checkpoint = tmp_path / "fit.pt"
    with pytest.raises(Killed):
        make().fit(*TRAIN, eval_set=TEST, checkpoint=checkpoint)
    monkeypatch.undo()
    resumed = make().fit(*TRAIN, eval_set=TEST, checkpoint=checkpoint)
    assert resumed.resumed_from_ == 5 and resumed.history_ == whole.history_
    assert np.array_equal(resumed.predict_proba(TEST[0]), whole.predict_proba(TEST[0]))
    assert make(epochs=1).fit(*TRAIN, eval_set=TEST, checkpoint=checkpoint).resumed_from_ is None


@pytest.mark.parametrize("name", ["bilstm-random", "cnn-random"])
def test_word_network_prediction_does_not_depend_on_batch_neighbours(name):
    """A text's probabilities must not change with the other texts padded into its batch (batch size 1 vs 8):
    otherwise accuracy and latency of one model differ by batch size, and exports cannot be validated."""
    est = STUDENTS[name]().fit(*TRAIN)
    texts = sorted(TEST[0][:8], key=len)   # the shortest text is padded the most
    assert len(texts[0].split()) < len(texts[-1].split())
    batched = est.predict_proba(texts)
    single = np.concatenate([est.predict_proba([t]) for t in texts])
    assert np.abs(batched - single).max() < 1e-4


# --- ensemble ----------------------------------------------------------------------------------------------------
def test_averaging_ensemble_from_fitted_averages():
    a = TfidfLogisticRegression().fit(*TRAIN)
    b = TfidfNaiveBayes().fit(*TRAIN)
    c = TfidfRidge().fit(*TRAIN)
    ens = AveragingEnsemble.from_fitted([("lr", a), ("nb", b), ("ridge", c)])
    texts = TEST[0][:20]
    expected = (a.predict_proba(texts) + b.predict_proba(texts) + c.predict_proba(texts)) / 3
    np.testing.assert_allclose(ens.predict_proba(texts), expected, atol=1e-12)
    np.testing.assert_array_equal(ens.predict(texts), expected.argmax(1))


def test_averaging_ensemble_fit_clones_members():
    members = [("lr", TfidfLogisticRegression()), ("nb", TfidfNaiveBayes())]
    ens = AveragingEnsemble(estimators=members)
    assert ens.fit(*TRAIN) is ens
    assert not hasattr(members[0][1], "classes_")          # the templates stay unfitted
    fitted = dict(ens.estimators_)
    expected = (fitted["lr"].predict_proba(TEST[0]) + fitted["nb"].predict_proba(TEST[0])) / 2
    np.testing.assert_allclose(ens.predict_proba(TEST[0]), expected)
    assert np.mean(ens.predict(TEST[0]) == TEST[1]) > 0.9
    twin = clone(ens)
    assert [n for n, _ in twin.get_params()["estimators"]] == ["lr", "nb"]
    ens_soft = AveragingEnsemble(estimators=members).fit(TRAIN[0], teacher_logits(TRAIN[1]))
    np.testing.assert_array_equal(ens_soft.classes_, [0, 1])


# --- registry ----------------------------------------------------------------------------------------------------
def test_registry_build_filters_params_and_rejects_unknown():
    est = zoo.build("tfidf_lr", {"C": 0.5, "progress": False})   # the run's progress flag means nothing to it
    assert isinstance(est, TfidfLogisticRegression) and est.C == 0.5
    with pytest.raises(UserError, match="student tfidf_lr has no parameter 'unrelated'"):
        zoo.build("tfidf_lr", {"C": 0.5, "unrelated": 1})
    bil = zoo.build("bilstm", {"hidden": 12, "progress": False})
    assert bil.hidden == 12 and bil.progress is False
    with pytest.raises(UserError, match="unknown student 'svm'"):
        zoo.build("svm", {})
    assert not zoo.needs_teacher("tfidf_lr") and not zoo.needs_teacher("bilstm")
    assert zoo.needs_teacher("bilstm", {"embedding": "teacher"}) and zoo.needs_teacher("static")
    assert zoo.needs_teacher("transformer") and zoo.needs_teacher("born_again") and not zoo.needs_teacher("nb")
    assert not zoo.needs_teacher("svm")


@pytest.mark.parametrize("name", sorted(zoo.REGISTRY))
def test_declarations_match_what_the_student_takes(name):
    """`fit_extras` and `uses_teacher` are declared for callers; they must name what `fit` and `__init__` take."""
    import inspect
    cls = zoo.REGISTRY[name]
    fit_params = set(inspect.signature(cls.fit).parameters) - {"self", "X", "y"}
    assert set(getattr(cls, "fit_extras", ())) == fit_params
    assert hasattr(cls, "uses_teacher") == ("teacher" in cls().get_params())
    with pytest.raises(TypeError):
        cls(None)  # keyword-only parameters, as scikit-learn recommends


# --- adding a student (docs/add-a-student.md) ----------------------------------------------------------------------
def train_export_and_serve(root, teacher_dir, capsys, student: str, served_backend: str, *sets) -> tuple[str, set]:
    """Through the real commands: `mbtb distill` trains both twins of `student` (beside tfidf_lr), `mbtb export`
    exports and validates its distilled twin; returns the export table printed and the variants serve loads."""
    import pandas as pd

    from bench.export import main as export
    from bench.zoo import open_run
    from distill.cli import main as distill
    from serve import load_run
    from tests.conftest import cli_argv

    overrides = [arg for item in sets for arg in ("--set", item)]
    assert distill(cli_argv(root, teacher_dir, *overrides, students=f"tfidf_lr,{student}")) == 0
    accuracy = pd.read_csv(root / "reports" / "smoke" / "accuracy.csv")
    assert {f"{student}-baseline", f"{student}-distilled"} <= set(accuracy["model"])
    capsys.readouterr()
    assert export(["--profile", "smoke", "--artifacts", str(root / "artifacts"), "--models", f"{student}-distilled",
                   "--quiet"]) == 0
    table = capsys.readouterr().out
    run = open_run("smoke", root / "artifacts", root / "reports")
    return table, {p.name for p in load_run(run, log=lambda *_: None, backends=(served_backend,)).predictors}


def test_a_torch_student_in_one_new_file_is_trained_exported_and_served(root, tiny_teacher_dir, monkeypatch, capsys):
    """tests/word_bag_student.py (a TorchStudent with its family) plus one REGISTRY line: the real CLI trains it in
    both modes, `mbtb export` exports and validates it, and serve lists both its variants."""
    from tests.word_bag_student import WordBag
    monkeypatch.setitem(zoo.REGISTRY, "wordbag", WordBag)   # the registration line

    table, served = train_export_and_serve(root, tiny_teacher_dir, capsys, "wordbag", "npz")
    assert re.search(r"\| wordbag-distilled \| npz +\| ok ", table), table
    assert {"wordbag-distilled/torch", "wordbag-distilled/npz"} <= served


# --- the word CNN -------------------------------------------------------------------------------------------------
def adjacency_task(n: int, seed: int):
    """Every text holds "very" and "good" once among as many fillers; the label says whether "very good" stands
    together. The same words in every text: only a student that reads word order can tell the classes apart."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILL, int(rng.integers(6, 12))))
        at = int(rng.integers(len(words)))
        if label:
            words[at:at] = ["very", "good"]
        else:
            words.insert(at, "good")
            words.insert(int(rng.choice([i for i in range(len(words) + 1) if i not in (at, at + 1)])), "very")
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def test_word_cnn_reads_word_order_where_a_bag_of_words_cannot():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import make_pipeline
    train, test = adjacency_task(400, 0), adjacency_task(200, 1)
    assert all(t.count("very") == 1 and t.count("good") == 1 for t in train[0])
    assert np.mean(["very good" in t for t in test[0]] == test[1]) == 1.0
    cnn = WordCNNClassifier(embedding="random", widths=(2,), filters=8, hidden=16, epochs=10, batch_size=32, lr=1e-2,
                            progress=False).fit(*train)
    words = make_pipeline(CountVectorizer(), LogisticRegression()).fit(*train)
    assert np.mean(cnn.predict(test[0]) == test[1]) > 0.9
    assert np.mean(words.predict(test[0]) == test[1]) < 0.7


def test_word_cnn_pools_only_over_positions_that_touch_a_word():
    """Padding must never win the max-pool, even where a filter's bias alone beats every window that sees a word
    (positive embeddings, negative filters): a text gives the same logits alone and padded into a longer batch."""
    import torch
    from distill.students.cnn import WordCNNNet
    torch.manual_seed(0)
    net = WordCNNNet(vocab_size=20, embedding_dim=4, widths=(2, 3), filters=8, hidden=5, num_classes=2,
                     dropout=0.0).eval()
    with torch.no_grad():
        net.embedding.weight.abs_()
        for conv in net.convs:
            conv.weight.abs_().neg_()
            conv.bias.fill_(3.0)
        alone, padded = net(torch.tensor([[5, 6, 7]])), net(torch.tensor([[5, 6, 7, 0, 0, 0, 0]]))
    torch.testing.assert_close(alone, padded)


def test_word_cnn_is_trained_exported_validated_and_served(root, tiny_teacher_dir, capsys):
    """The registered `cnn`: the real CLI trains both twins, `mbtb export` exports and validates each of its
    backends (the BiLSTM's, through the `cnn` family), and serve lists them."""
    table, served = train_export_and_serve(root, tiny_teacher_dir, capsys, "cnn", "onnx-int8",
                                           'students.cnn.embedding="random"', "students.cnn.filters=8",
                                           "students.cnn.epochs=2")
    for backend in ("torchscript", "onnx", "onnx-int8"):
        assert re.search(rf"\| cnn-distilled +\| {backend} +\| ok ", table), table
    assert {"cnn-distilled/torch", "cnn-distilled/onnx-int8"} <= served
