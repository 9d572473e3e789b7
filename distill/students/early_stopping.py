"""Early stopping on a dev score, shared by the students trained step by step (BiLSTM, transformer, static)."""
from __future__ import annotations


import numpy as np


def dev_score(student, eval_set) -> float:
    """The student's score on `eval_set` = (texts, gold): its `dev_metric(gold, predicted)` when set (the run's
    `[eval] metric`), else accuracy."""
    predicted, gold = student.predict(eval_set[0]), np.asarray(eval_set[1])
    metric = getattr(student, "dev_metric", None)
    return float(metric(gold, predicted)) if metric is not None else float(np.mean(predicted == gold))


class EarlyStopping:
    """Keeps a snapshot of the model at its best dev score and says when to stop: after more than `patience`
    evaluations in a row without improvement."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -1.0
        self.bad = 0
        self.snapshot = None
        self.history: list[float] = []

    def update(self, score: float, snapshot) -> bool:
        """Record one dev score; `snapshot()` is called only when it is the best so far. True means stop."""
        self.history.append(score)
        if score > self.best:
            self.best, self.bad, self.snapshot = score, 0, snapshot()
        else:
            self.bad += 1
        return self.bad > self.patience
