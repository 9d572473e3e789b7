"""The test texts a benchmark case feeds its model."""
from __future__ import annotations

import numpy as np


def timed_batch(texts: list[str], size: int) -> list[str]:
    """What a case of batch `size` feeds the model. Batch 1: the text of median length in words, a typical request
    (batch-1 latency of a transformer grows with the text: on MR the first test text is 58 mpnet tokens, longer than
    99% of them, and the full profile's teacher took 1.6x, its transformer students 2x, as long on it as on the
    median-length text's 26). Larger batches: the first `size` texts, repeated when there are fewer, so each batch
    is padded as such a batch of requests is."""
    if size == 1:
        lengths = np.array([len(text.split()) for text in texts])
        return [texts[int(np.argsort(lengths, kind="stable")[len(texts) // 2])]]
    return (texts * -(-size // len(texts)))[:size]
