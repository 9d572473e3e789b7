"""A static-embedding student (Model2Vec): the fine-tuned teacher distilled into one vector per token, a mean over a
text's tokens, and a linear head trained on the teacher's logits (or on gold labels: the hard twin).

`model2vec.distill` runs every token of the teacher's vocabulary through the fine-tuned teacher once and keeps its
(PCA-reduced) output as that token's static embedding, so the embeddings already carry what fine-tuning taught the
teacher. The head, and optionally the embeddings themselves, are then trained like fastText.

Because the head is linear and the pooling a mean, head(mean(E[ids])) = mean((E @ W.T)[ids]) + b: the fitted student
keeps only that projected table (vocabulary x classes). Inference is a tokenizer (the `tokenizers` library), a gather
and a mean in numpy: no torch, no transformer.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import joblib
import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .soft import softmax
from .torch_student import TorchStudent, student_parameters
from .wordpiece_cache import WordPieceCache


def distil_static(teacher: str, pca_dims: int, stamp) -> tuple[np.ndarray, str]:
    """(token embeddings, tokenizer JSON) of the teacher at `teacher` (offline). `stamp` (the weights' names, sizes
    and mtimes) is only part of the cache key: a teacher retrained at the same path is distilled again."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from model2vec.distill import distill
    except ImportError:
        raise UserError("the static student needs model2vec; run `pip install -r requirements.txt` "
                        "(make does this for you)") from None
    from transformers import AutoConfig
    width = AutoConfig.from_pretrained(teacher).hidden_size
    static = distill(teacher, pca_dims=pca_dims if pca_dims < width else None, quantize_to="float32")
    return np.asarray(static.embedding, dtype=np.float32), static.tokenizer.to_str()


def _weights_stamp(teacher: str):
    files = sorted(Path(teacher).glob("*.safetensors")) + sorted(Path(teacher).glob("*.bin"))
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


# Tables kept on disk (~30 MB each for all-mpnet-base-v2); a teacher retrained at the same path leaves its old table
# unreachable (the stamp is in the key), so the least recently used beyond these are removed.
KEPT_TABLES = 4


@functools.lru_cache(maxsize=2)
def _cached_distillation(teacher: str, pca_dims: int, stamp, memory: str | None) -> tuple[np.ndarray, str]:
    disk = joblib.Memory(memory, verbose=0)
    table = disk.cache(distil_static)(teacher, pca_dims, stamp)
    disk.reduce_size(items_limit=KEPT_TABLES)
    return table


def teacher_static_embeddings(teacher, pca_dims: int, memory=None) -> tuple[np.ndarray, str]:
    """The fine-tuned teacher's Model2Vec table and tokenizer JSON, distilled once per process and weights, and once
    for good with `memory` (a directory, as in scikit-learn's `Pipeline(memory=...)`; joblib.Memory, which computes
    again what it cannot read back). The distillation runs the teacher over its whole vocabulary: ~3.3 min for
    all-mpnet-base-v2 on 2 cores, paid once rather than by every command that trains a student on it."""
    return _cached_distillation(str(teacher), pca_dims, _weights_stamp(str(teacher)),
                                None if memory is None else str(memory))


class MeanPooledLinear(nn.Module):
    """The network trained: the mean of a text's token embeddings, then a linear head."""

    def __init__(self, bag: nn.EmbeddingBag, head: nn.Linear):
        super().__init__()
        self.bag, self.head = bag, head

    def forward(self, ids, offsets):
        return self.head(self.bag(ids, offsets))


def bag_input(rows: list[np.ndarray]) -> dict:
    """`MeanPooledLinear`'s input for rows of token ids: all ids in one tensor plus each row's start. An empty row
    pools to zeros."""
    lengths = [len(r) for r in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(rows) if sum(lengths) else np.zeros(0, dtype=np.int64)
    return {"ids": torch.from_numpy(flat.astype(np.int64)), "offsets": torch.from_numpy(offsets)}


@student_parameters
class StaticEmbeddingClassifier(TorchStudent):
    """Model2Vec embeddings of the teacher + mean pooling + a linear head.

    `fit(texts, y)`: y = labels (cross-entropy) or teacher logits (`loss`: mse | kl | mix; `anneal=True` for teacher
    annealing). `train_embeddings` also updates the static embeddings (they start as the teacher's). Early stopping
    on `eval_set`. `memory`: a directory that keeps the teacher's distilled table between processes.
    """

    family = "static"
    train_threads = 1   # a gather and a small matrix: a second thread only adds synchronisation

    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Its embeddings are distilled from the teacher, whatever the parameters."""
        return True

    teacher: str | None = None
    pca_dims: int = 256
    max_length: int = 128
    train_embeddings: bool = True
    memory: str | None = None
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3

    # --- text -> token ids -------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The Model2Vec tokenizer (`tokenizers.Tokenizer`, no padding, truncated to `max_length`), built once."""
        if getattr(self, "_tokenizer", None) is None:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_str(self.tokenizer_json_)
            tok.no_padding()
            tok.enable_truncation(self.max_length)
            self._tokenizer = tok
        return self._tokenizer

    @property
    def word_cache(self):
        """The exact fast path for one text at a time (wordpiece_cache.py), or None for a tokenizer it cannot cover."""
        if getattr(self, "_word_cache", False) is False:
            supported = WordPieceCache.supports(self.tokenizer_json_)
            self._word_cache = WordPieceCache(self.tokenizer, self.max_length) if supported else None
        return self._word_cache

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_tokenizer", None)  # rebuilt from tokenizer_json_ on first use
        state.pop("_word_cache", None)
        return state

    def token_ids(self, texts) -> list[np.ndarray]:
        texts = list(texts)
        cache = self.word_cache
        if cache is not None:  # ~6 µs a sentence against encode's ~40 and encode_batch's ~90 (2 cores, MR)
            return [np.asarray(cache.ids(text), dtype=np.int64) for text in texts]
        if len(texts) == 1:  # encode_batch's thread pool costs more than it saves on one text (~60 µs here)
            return [np.asarray(self.tokenizer.encode(texts[0], add_special_tokens=False).ids, dtype=np.int64)]
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def pad(self, ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask) padded to the longest row; a text with no known token gets one masked-out slot."""
        width = max(1, max((len(r) for r in ids), default=1))
        padded = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.float32)
        for i, row in enumerate(ids):
            padded[i, :len(row)] = row
            mask[i, :len(row)] = 1.0
        return padded, mask

    # --- training (the loop is TorchStudent's) -------------------------------------------------------------------
    def _network(self, texts, num_classes):
        if not self.teacher:
            raise UserError("the static student needs its teacher: set `teacher` to the teacher's model dir")
        embeddings, self.tokenizer_json_ = teacher_static_embeddings(self.teacher, self.pca_dims, self.memory)
        self._tokenizer = None
        bag = nn.EmbeddingBag.from_pretrained(torch.from_numpy(embeddings.copy()), freeze=not self.train_embeddings,
                                              mode="mean")
        return MeanPooledLinear(bag, nn.Linear(embeddings.shape[1], num_classes))

    def _training_inputs(self, texts):
        ids = self.token_ids(texts)
        return ids, np.array([len(row) for row in ids])

    def _batch(self, ids, rows):
        return bag_input([ids[i] for i in rows])

    def _batches(self, lengths, rng):
        # Shuffled batches of any lengths: a bag of embeddings pads nothing.
        return np.array_split(rng.permutation(len(lengths)), math.ceil(len(lengths) / self.batch_size))

    @torch.no_grad()
    def _publish(self, network):
        # The head folded into the embeddings: one row of class scores per token.
        self.table_ = (network.bag.weight @ network.head.weight.T).numpy().astype(np.float32)
        self.bias_ = network.head.bias.numpy().astype(np.float32).copy()

    def _finish(self, network):
        self.embedding_dim_ = int(network.bag.weight.shape[1])

    # --- inference (numpy only) --------------------------------------------------------------------------------
    def logits_from_ids(self, ids: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(ids), len(self.bias_)), dtype=np.float32)
        for i, row in enumerate(ids):
            out[i] = self.table_.take(row, axis=0).sum(axis=0) / len(row) if len(row) else 0.0  # 3x mean()'s speed
        return out + self.bias_

    def predict_logits(self, X) -> np.ndarray:
        return self.logits_from_ids(self.token_ids(X))

    def predict_proba(self, X):
        return softmax(self.predict_logits(X))
