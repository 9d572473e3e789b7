"""Test-set metrics: accuracy with a bootstrap 95% interval, macro-F1, agreement with the teacher, and the run's
chosen metric (`[eval] metric`) with its own bootstrap interval: the score that early stopping, the verdict, the
Pareto plot and pick-for-me follow. Every interval is a seeded percentile bootstrap over test examples
(`scipy.stats.bootstrap`), paired when two models are compared on the same examples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score

from .errors import UserError

PER_CLASS = ("recall", "precision", "f1")
METRIC_HELP = "accuracy | macro_f1 | recall:<class> | precision:<class> | f1:<class>"


@dataclass(frozen=True)
class Metric:
    """A metric by name (`accuracy`, `macro_f1`) or of one class (`recall:pos`): `metric(gold, predicted)`."""
    spec: str
    kind: str
    label: int | None = None

    @classmethod
    def parse(cls, spec: str, labels: list[str]) -> "Metric":
        kind, _, name = spec.partition(":")
        if kind in ("accuracy", "macro_f1") and not name:
            return cls(spec, kind)
        if kind in PER_CLASS and name:
            matches = [i for i, label in enumerate(labels) if label == name] or \
                      [i for i, label in enumerate(labels) if label.lower() == name.lower()]
            if not matches:
                raise UserError(f"eval.metric = {spec!r}: no class {name!r} in the data; its classes are "
                                f"{', '.join(labels)}")
            return cls(spec, kind, matches[0])
        raise UserError(f"eval.metric = {spec!r} is not a metric; choose {METRIC_HELP}")

    def __call__(self, gold, predicted) -> float:
        return float(self.batched(np.asarray(gold), np.asarray(predicted)))

    def batched(self, gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """The metric along the last axis of label arrays: one value per row of (resamples x examples), vectorised
        for the bootstrap."""
        if self.kind == "accuracy":
            return (gold == predicted).mean(axis=-1)
        classes = [self.label] if self.label is not None else np.unique(gold)
        per_class = []
        for c in classes:
            true_pos = ((gold == c) & (predicted == c)).sum(axis=-1)
            recall = true_pos / np.maximum((gold == c).sum(axis=-1), 1)
            precision = true_pos / np.maximum((predicted == c).sum(axis=-1), 1)
            f1 = np.where(recall + precision > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0)
            per_class.append({"recall": recall, "precision": precision, "f1": f1, "macro_f1": f1}[self.kind])
        return np.mean(per_class, axis=0)

    def with_ci(self, gold, predicted, n_resamples: int = 1000, seed: int = 13, level: float = 0.95):
        """(value, low, high): the metric with its bootstrap interval over test examples."""
        low, high = bootstrap_interval(lambda g, p: self.batched(g, p), (gold, predicted), n_resamples, seed, level)
        return self(gold, predicted), low, high

    def difference_ci(self, gold, predicted, baseline, n_resamples: int = 1000, seed: int = 13, level: float = 0.95):
        """(metric(predicted) - metric(baseline), low, high): two models' predictions on the same examples, compared
        with a paired bootstrap (one resample of examples scores both), tighter than two separate intervals."""
        low, high = bootstrap_interval(lambda g, p, b: self.batched(g, p) - self.batched(g, b),
                                        (gold, predicted, baseline), n_resamples, seed, level)
        return self(gold, predicted) - self(gold, baseline), low, high


ACCURACY = Metric("accuracy", "accuracy")
RESAMPLES_PER_BATCH = 200   # bounds the memory of a bootstrap over a large test split


def bootstrap_interval(statistic, samples, n_resamples: int = 1000, seed: int = 13, level: float = 0.95):
    """(low, high): the seeded percentile bootstrap interval of `statistic(*samples)`, each resample drawing the same
    test examples from every sample. `statistic` takes (resamples x examples) arrays and returns one value per row."""
    samples = tuple(np.asarray(s) for s in samples)
    if len(samples[0]) < 2:   # scipy resamples two or more; a single example has no spread: its value is the interval
        value = float(statistic(*(s[None] for s in samples))[0])
        return value, value
    result = stats.bootstrap(samples, lambda *rows, axis=-1: statistic(*rows), n_resamples=n_resamples,
                             batch=RESAMPLES_PER_BATCH, vectorized=True, paired=True, confidence_level=level,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_ci(correct: np.ndarray, n_resamples: int = 1000, seed: int = 13, level: float = 0.95):
    """Percentile bootstrap interval for the mean of a 0/1 vector (resampling test examples); of a difference of two
    such vectors, it is the paired interval of the difference of their means."""
    correct = np.asarray(correct, dtype=np.float64)
    return bootstrap_interval(lambda rows: rows.mean(axis=-1), (correct,), n_resamples, seed, level)


def evaluate(y_true, proba, teacher_pred=None, n_resamples=1000, seed=13, metric: Metric | None = None) -> dict:
    """Accuracy with its CI, macro-F1, agreement with the teacher, and `metric` (accuracy when None) as
    score / score_low / score_high."""
    y_true = np.asarray(y_true)
    pred = np.asarray(proba).argmax(axis=1)
    correct = pred == y_true
    low, high = bootstrap_ci(correct, n_resamples, seed)
    metric = metric or ACCURACY
    score, score_low, score_high = (float(correct.mean()), low, high) if metric.kind == "accuracy" else \
        metric.with_ci(y_true, pred, n_resamples, seed)
    return {"metric": metric.spec, "score": score, "score_low": score_low, "score_high": score_high,
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
