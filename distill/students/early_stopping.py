"""Early stopping on a dev score, shared by the students trained step by step (BiLSTM, transformer, static)."""
from __future__ import annotations


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
