"""Students: scikit-learn estimators over raw text.

`fit(texts, y)` takes either hard labels (1-D ints: the baseline) or the teacher's logits (2-D floats: the distilled
twin). Every student has `predict` and `predict_proba`, so they compose with scikit-learn tools and with each other.
Students with a `teacher` parameter (transformer, static; the BiLSTM with the teacher's embeddings) are built from
the teacher's model directory.
Each student class names its `family` (bench/families.py: how it is served, exported and validated).
"""
from .bilstm import BiLSTMClassifier
from .ensemble import AveragingEnsemble
from .linear import TfidfLogisticRegression, TfidfNaiveBayes, TfidfRidge
from .static import StaticEmbeddingClassifier
from .transformer import BornAgainClassifier, TransformerClassifier

REGISTRY = {
    "tfidf_lr": TfidfLogisticRegression,
    "tfidf_ridge": TfidfRidge,
    "nb": TfidfNaiveBayes,
    "bilstm": BiLSTMClassifier,
    "transformer": TransformerClassifier,
    "born_again": BornAgainClassifier,
    "static": StaticEmbeddingClassifier,
}


def build(name: str, params: dict):
    from ..errors import UserError
    if name not in REGISTRY:
        raise UserError(f"unknown student {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    known = cls().get_params()
    return cls(**{k: v for k, v in params.items() if k in known})


def needs_teacher(name: str, params: dict | None = None) -> bool:
    """Whether the student, with these parameters, is initialised from (and so depends on) the fine-tuned teacher.
    A class whose dependence is optional says when it applies (`uses_teacher(params)`, e.g. the BiLSTM's embedding)."""
    if name not in REGISTRY or "teacher" not in REGISTRY[name]().get_params():
        return False
    uses_teacher = getattr(REGISTRY[name], "uses_teacher", None)
    return uses_teacher(params or {}) if uses_teacher else True


__all__ = ["REGISTRY", "build", "needs_teacher", "BiLSTMClassifier", "AveragingEnsemble", "BornAgainClassifier",
           "StaticEmbeddingClassifier", "TfidfLogisticRegression", "TfidfNaiveBayes", "TfidfRidge",
           "TransformerClassifier"]
