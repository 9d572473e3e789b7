"""An ensemble of fitted students: the average of their probabilities."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone


class AveragingEnsemble(ClassifierMixin, BaseEstimator):
    """Averages `predict_proba` over `estimators` (a list of (name, estimator)).

    `fit` fits clones of every member on the same targets; `from_fitted` wraps members trained elsewhere.
    """

    family = "ensemble"

    def __init__(self, *, estimators=()):
        self.estimators = estimators

    def fit(self, X, y):
        self.estimators_ = [(name, clone(est).fit(X, y)) for name, est in self.estimators]
        self.classes_ = self.estimators_[0][1].classes_
        return self

    @classmethod
    def from_fitted(cls, fitted):
        ens = cls(estimators=list(fitted))
        ens.estimators_ = list(fitted)
        ens.classes_ = fitted[0][1].classes_
        return ens

    def predict_proba(self, X):
        return np.mean([est.predict_proba(X) for _, est in self.estimators_], axis=0)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
