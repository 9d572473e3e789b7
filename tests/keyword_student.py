"""A student written for the registry test: word counts per class (a bare multinomial naive Bayes in numpy), its
own family with one exported backend (`npz`). Importing this module registers the family, as a plugin would."""
from __future__ import annotations

import re

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from distill.families import Backend, Family, register
from distill.families.predictor import Predictor
from distill.students.soft import softmax

WORD = re.compile(r"\w+")


class KeywordCounts(ClassifierMixin, BaseEstimator):
    family = "keyword"

    def __init__(self, *, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        y = np.asarray(y)
        targets = np.eye(int(y.max()) + 1)[y] if y.ndim == 1 else softmax(y)   # gold labels or teacher logits
        self.vocabulary_ = {w: i for i, w in enumerate(sorted({w for t in X for w in WORD.findall(t.lower())}))}
        counts = targets.T @ self.counts(X) + self.alpha
        self.log_prob_ = np.log(counts / counts.sum(1, keepdims=True))
        self.prior_ = np.log(targets.mean(0))
        self.classes_ = np.arange(targets.shape[1])
        return self

    def counts(self, X) -> np.ndarray:
        out = np.zeros((len(X), len(self.vocabulary_)))
        for i, text in enumerate(X):
            for word in WORD.findall(text.lower()):
                if word in self.vocabulary_:
                    out[i, self.vocabulary_[word]] += 1
        return out

    def predict_proba(self, X):
        return softmax(self.counts(X) @ self.log_prob_.T + self.prior_)

    def predict(self, X):
        return self.predict_proba(X).argmax(1)


class KeywordPredictor(Predictor):
    def __init__(self, estimator=None, log_prob=None, prior=None, **meta):
        super().__init__(**meta)
        self.estimator, self.log_prob, self.prior = estimator, log_prob, prior

    def prepare(self, texts):
        return self.estimator.counts(texts)

    def run(self, prepared):
        return softmax(prepared @ self.log_prob.T + self.prior)


def export_npz(estimator, out, sample_texts):
    np.savez(out / "keyword.npz", log_prob=estimator.log_prob_, prior=estimator.prior_)


def load_npz(out, ctx):
    with np.load(out / "keyword.npz") as arrays:
        return KeywordPredictor(ctx["source"], arrays["log_prob"], arrays["prior"], **ctx["meta"])


register(Family("keyword", "keyword counts", "numpy",
                lambda est, **meta: KeywordPredictor(est, est.log_prob_, est.prior_, **meta),
                backends={"npz": Backend("npz", export_npz, load_npz, tolerance=1e-9)}))
