"""Batches of similar-length texts: padding to a batch's longest text then costs little. Used by every torch loop
(teacher and students, training and inference) and by the scoring of exported models."""
from __future__ import annotations

import numpy as np


def length_batches(lengths, batch_size: int, rng: np.random.Generator | None = None,
                   jitter: float = 0.0) -> list[np.ndarray]:
    """Row indices in batches of `batch_size`, sorted by length (stable), the batches in that order; with `rng`,
    the batches shuffled, and sorted by length plus uniform noise of up to `jitter` so that texts of one length do
    not always share a batch."""
    lengths = np.asarray(lengths)
    noisy = lengths + rng.uniform(0, 1, len(lengths)) * jitter if rng is not None and jitter else lengths
    order = np.argsort(noisy, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches
