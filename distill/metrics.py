"""Test-set metrics: accuracy with a bootstrap 95% interval, macro-F1, agreement with the teacher."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score


def bootstrap_ci(correct: np.ndarray, n_resamples: int = 1000, seed: int = 13, level: float = 0.95):
    """Percentile bootstrap interval for the mean of a 0/1 vector (resampling test examples)."""
    rng = np.random.default_rng(seed)
    correct = np.asarray(correct, dtype=np.float64)
    idx = rng.integers(0, len(correct), size=(n_resamples, len(correct)))
    means = correct[idx].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def evaluate(y_true, proba, teacher_pred=None, n_resamples=1000, seed=13) -> dict:
    y_true = np.asarray(y_true)
    pred = np.asarray(proba).argmax(axis=1)
    correct = pred == y_true
    low, high = bootstrap_ci(correct, n_resamples, seed)
    return {
        "accuracy": float(correct.mean()),
        "ci_low": low,
        "ci_high": high,
        "macro_f1": float(f1_score(y_true, pred, average="macro")),
        "agreement": float(np.mean(pred == teacher_pred)) if teacher_pred is not None else float("nan"),
    }


def count_params(model) -> int:
    """Learned weights: torch parameters, or the fitted arrays of a scikit-learn head (for the static student, the
    head-projected token table it runs with)."""
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    if hasattr(model, "module_"):
        return int(sum(p.numel() for p in model.module_.parameters()))
    if hasattr(model, "estimators_"):
        return int(sum(count_params(est) for _, est in model.estimators_))
    head = getattr(model, "model_", model)
    total = 0
    for attr in ("coef_", "intercept_", "feature_log_prob_", "class_log_prior_", "table_", "bias_"):
        value = getattr(head, attr, None)
        if value is not None:
            total += int(np.size(value))
    return total
