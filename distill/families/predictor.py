"""One inference interface for every model and backend: a list of texts in, class probabilities out.

`prepare(texts)` does the CPU-side text work (tokenising, vectorising) and `run(prepared)` the model alone, so a
benchmark can time end-to-end (`predict_proba`) and model-only (`run`) the same way for every variant.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import softmax


@dataclass
class Predictor(ABC):
    model: str                      # e.g. "teacher", "bilstm-distilled"
    backend: str                    # e.g. "torch", "onnx-int8", "sklearn"
    labels: list[str]
    kind: str = ""                  # teacher | baseline | distilled | ensemble
    info: dict = field(default_factory=dict)   # size_bytes, params, export validation...

    @property
    def name(self) -> str:
        return f"{self.model}/{self.backend}"

    @abstractmethod
    def prepare(self, texts: list[str]):
        """Text -> model input (token ids, features)."""

    @abstractmethod
    def run(self, prepared) -> np.ndarray:
        """Model input -> probabilities, shape (n, n_classes)."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.run(self.prepare(list(texts)))

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.predict_proba(texts).argmax(axis=1)


@dataclass
class SklearnPredictor(Predictor):
    """A TF-IDF student in scikit-learn: prepare = vectorise, run = the fitted head."""
    estimator: object = None

    def prepare(self, texts):
        return self.estimator.transform(texts)

    def run(self, prepared):
        return self.estimator.predict_proba_features(prepared)


@dataclass
class LinearTextPredictor(Predictor):
    """A TF-IDF student folded into one linear map, in numpy: prepare = scikit-learn's own analyzer (compiled once)
    plus dictionary look-ups, run = a gather and a dot product. Every TF-IDF head (logistic regression, naive Bayes,
    ridge) is softmax(x @ weights + bias) over the TF-IDF vector x; see exporters.py:export_linear_numpy."""
    analyzer: object = None
    vocabulary: dict = field(default_factory=dict)
    idf: np.ndarray = None
    weights: np.ndarray = None      # (terms, classes)
    bias: np.ndarray = None
    sublinear_tf: bool = True

    def prepare(self, texts):
        rows = []
        for text in texts:
            counts: dict[int, int] = {}
            for term in self.analyzer(text):
                index = self.vocabulary.get(term)
                if index is not None:
                    counts[index] = counts.get(index, 0) + 1
            index = np.fromiter(counts, dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (1.0 + np.log(tf) if self.sublinear_tf else tf) * self.idf[index]
            norm = np.sqrt(values @ values)
            rows.append((index, values / norm if norm else values))
        return rows

    def run(self, prepared):
        logits = np.stack([values @ self.weights[index] for index, values in prepared]) + self.bias
        return softmax(logits, axis=1)


@dataclass
class StaticPredictor(Predictor):
    """The static-embedding student in numpy: prepare = the `tokenizers` tokenizer, run = mean of the token rows of
    the head-projected embedding table, plus the bias."""
    estimator: object = None

    def prepare(self, texts):
        return self.estimator.token_ids(texts)

    def run(self, prepared):
        return softmax(self.estimator.logits_from_ids(prepared).astype(np.float64), axis=1)


@dataclass
class EnsemblePredictor(Predictor):
    """Averages the probabilities of member predictors (each prepares its own input)."""
    members: list = field(default_factory=list)

    def prepare(self, texts):
        return [m.prepare(texts) for m in self.members]

    def run(self, prepared):
        return np.mean([m.run(p) for m, p in zip(self.members, prepared)], axis=0)


@dataclass
class BiLSTMPredictor(Predictor):
    """A network over word ids (the BiLSTM, the word CNN) in PyTorch (eager or TorchScript `module`): prepare =
    token ids."""
    estimator: object = None
    module: object = None

    def prepare(self, texts):
        return self.estimator.encode(texts)

    @torch.no_grad()
    def run(self, prepared):
        return softmax(self.module(prepared).numpy(), axis=1)


@dataclass
class TransformerPredictor(Predictor):
    """A Hugging Face sequence classifier in PyTorch (eager, TorchScript or dynamic int8) on CPU or CUDA."""
    tokenizer: object = None
    module: object = None
    max_length: int = 64
    device: str = "cpu"
    traced: bool = False            # TorchScript modules take positional tensors and return a tuple

    def prepare(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def run(self, prepared):
        if self.traced:
            logits = self.module(prepared["input_ids"], prepared["attention_mask"])[0]
        else:
            logits = self.module(**prepared).logits
        if self.device != "cpu":
            torch.cuda.synchronize()
        return softmax(logits.float().cpu().numpy(), axis=1)


@dataclass
class OnnxPredictor(Predictor):
    """Any ONNX Runtime session. `encode(texts) -> feeds dict`; outputs[0] are logits or probabilities."""
    session: object = None
    encode: object = None
    outputs_probabilities: bool = False

    def prepare(self, texts):
        return self.encode(texts)

    def run(self, prepared):
        out = self.session.run(None, prepared)
        probs = out[-1] if self.outputs_probabilities else out[0]
        if isinstance(probs, list):  # skl2onnx ZipMap-free output is already an array; guard for dict rows
            probs = np.array([[row[k] for k in sorted(row)] for row in probs])
        probs = np.asarray(probs, dtype=np.float64)
        return probs if self.outputs_probabilities else softmax(probs, axis=1)
