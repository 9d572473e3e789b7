"""Helpers shared by students that learn from the teacher's logits."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.special


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, in float64 (the students' targets)."""
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def is_soft(y) -> bool:
    return np.asarray(y).ndim == 2


def expand_soft_targets(X, probs: np.ndarray):
    """Rewrite a soft-target problem as a weighted hard-label one.

    Each row is repeated once per class with that class as its label and the teacher's probability as its sample
    weight. Any estimator minimising weighted log-loss (or weighted counts, for naive Bayes) then minimises the cross-
    entropy against the soft targets exactly.
    """
    n, k = probs.shape
    X_rep = sp.vstack([X] * k, format="csr") if sp.issparse(X) else np.concatenate([X] * k)
    y_rep = np.repeat(np.arange(k), n)
    w_rep = probs.T.reshape(-1)
    keep = w_rep > 1e-6  # classes the teacher rules out add nothing but cost
    return X_rep[keep], y_rep[keep], w_rep[keep]
