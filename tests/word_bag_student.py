"""The recipe of docs/add-a-student.md, followed for real: a torch student in one new file.

`WordBag` has fastText's shape: the mean of a text's word embeddings, then a linear head. TorchStudent's loop trains
it (gold labels or the teacher's logits, the distillation losses, early stopping on dev); the class declares only its
network and how it reads text. Its family, `wordbag`, serves it as trained (`torch`) and exports it to numpy arrays
(`npz`); importing this module registers the family. The student itself is registered with one line,
`"wordbag": WordBag` in distill/students/__init__.py's REGISTRY (tests/test_students.py sets it for the test).
"""
from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from distill.families import Backend, Family, register
from distill.families.predictor import Predictor
from distill.students.soft import softmax
from distill.students.static import MeanPooledLinear, bag_input
from distill.students.torch_student import TorchStudent, student_parameters

WORD = re.compile(r"\w+")


@student_parameters
class WordBag(TorchStudent):
    """Mean of word embeddings (`dim` wide, learnt from scratch) + a linear head."""

    family = "wordbag"

    dim: int = 16      # its own parameter; the loop's (epochs, lr, loss, patience, ...) are TorchStudent's
    lr: float = 0.05   # a default of the loop's changed

    def _network(self, texts, num_classes):
        words = sorted({w for text in texts for w in WORD.findall(text.lower())})
        self.vocabulary_ = {w: i for i, w in enumerate(words)}
        self.module_ = MeanPooledLinear(nn.EmbeddingBag(len(words), self.dim, mode="mean"),
                                        nn.Linear(self.dim, num_classes))
        return self.module_

    def word_ids(self, texts) -> list[np.ndarray]:
        """The known words of each text, as rows of the embedding table."""
        return [np.array([self.vocabulary_[w] for w in WORD.findall(text.lower()) if w in self.vocabulary_],
                         dtype=np.int64) for text in texts]

    def _training_inputs(self, texts):
        ids = self.word_ids(texts)
        return ids, np.array([len(row) for row in ids])

    def _batch(self, ids, rows):
        return bag_input([ids[i] for i in rows])

    @torch.no_grad()
    def predict_proba(self, X):
        self.module_.eval()
        return torch.softmax(self.module_(**bag_input(self.word_ids(list(X)))), dim=-1).numpy()


# --- its family: served as trained, or from numpy arrays -------------------------------------------------------------
class AsTrained(Predictor):
    def __init__(self, estimator=None, **meta):
        super().__init__(**meta)
        self.estimator = estimator

    def prepare(self, texts):
        return texts

    def run(self, prepared):
        return self.estimator.predict_proba(prepared)


class WordBagArrays(Predictor):
    """The exported student in numpy: a gather, a mean and a dot product."""

    def __init__(self, estimator=None, embeddings=None, weight=None, bias=None, **meta):
        super().__init__(**meta)
        self.estimator, self.embeddings, self.weight, self.bias = estimator, embeddings, weight, bias

    def prepare(self, texts):
        return self.estimator.word_ids(texts)

    def run(self, prepared):
        pooled = np.stack([self.embeddings[row].mean(0) if len(row) else np.zeros(self.embeddings.shape[1])
                           for row in prepared])
        return softmax(pooled @ self.weight.T + self.bias)


def export_npz(estimator, out, sample_texts):
    network = estimator.module_
    np.savez(out / "wordbag.npz", embeddings=network.bag.weight.detach().double().numpy(),
             weight=network.head.weight.detach().double().numpy(), bias=network.head.bias.detach().double().numpy())


def load_npz(out, ctx):
    with np.load(out / "wordbag.npz") as arrays:
        return WordBagArrays(ctx["source"], arrays["embeddings"], arrays["weight"], arrays["bias"], **ctx["meta"])


register(Family("wordbag", "word bag (torch)", "torch", lambda est, **meta: AsTrained(est, **meta),
                backends={"npz": Backend("npz", export_npz, load_npz, tolerance=1e-5)}))
