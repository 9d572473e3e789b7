"""Mini-batches for the students trained step by step (BiLSTM, transformer)."""
from __future__ import annotations

import numpy as np


def length_buckets(lengths, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length texts: little padding, still random order."""
    order = np.argsort(lengths + rng.uniform(0, 1, len(lengths)) * 3, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches
