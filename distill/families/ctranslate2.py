"""CTranslate2 backends of the transformer family, for BERT-architecture models (MiniLM, BERT and the students cut
from them; CTranslate2 converts no MPNet): the encoder and pooler converted by CTranslate2, the classification
head kept as numpy arrays, run in fp32 (`ctranslate2`) or with int8 weights (`ctranslate2-int8`, quantised at
conversion, one scale per output row; activations quantised on the fly).

Imported by distill/families/__init__.py when ctranslate2 is installed; docs/engines.md has the measurements. A
model of another architecture fails its export with one line (the full profile's MPNet models skip these backends:
configs/full.toml, export.skip).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from ..errors import UserError
from ..teacher_onnx import OnnxLogits, hf_dir
from .predictor import Predictor
from .registry import INT8, TEACHER_FAMILY, Backend, add_backend

HEAD = "head.npz"


@dataclass
class CTranslate2Predictor(Predictor):
    """prepare = token ids, unpadded (CTranslate2 batches ragged lists); run = encoder + pooler, then the head."""
    encoder: object = None
    tokenizer: object = None
    weight: np.ndarray = None      # (classes, hidden)
    bias: np.ndarray = None
    max_length: int = 64

    def prepare(self, texts):
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)

    def logits(self, prepared) -> np.ndarray:
        pooled = self.encoder.forward_batch(prepared["input_ids"], token_type_ids=prepared.get("token_type_ids"))
        return np.asarray(pooled.pooler_output, dtype=np.float64) @ self.weight.T + self.bias

    def run(self, prepared):
        return softmax(self.logits(prepared), axis=1)


def export_ctranslate2(source, out, sample_texts, quantization=None):
    import ctranslate2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    with hf_dir(source) as source_dir:
        model = AutoModelForSequenceClassification.from_pretrained(source_dir)
        if model.config.model_type != "bert":
            raise UserError(f"CTranslate2 converts BERT-architecture classifiers here, not {model.config.model_type!r}"
                            "; leave the ctranslate2 backends out (export.skip) for this model")
        ctranslate2.converters.TransformersConverter(str(source_dir)).convert(str(out), quantization=quantization,
                                                                             force=True)
        AutoTokenizer.from_pretrained(source_dir).save_pretrained(out)
    head = model.classifier   # BertForSequenceClassification: dropout, then this Linear on the pooled output
    np.savez(Path(out) / HEAD, weight=head.weight.detach().numpy(), bias=head.bias.detach().numpy())


def load_ctranslate2(out, ctx, threads: int | None = None):
    import ctranslate2
    from transformers import AutoTokenizer
    encoder = ctranslate2.Encoder(str(out), device="cpu", intra_threads=threads or torch.get_num_threads())
    with np.load(Path(out) / HEAD) as head:
        weight, bias = head["weight"].astype(np.float64), head["bias"].astype(np.float64)
    return CTranslate2Predictor(encoder=encoder, tokenizer=AutoTokenizer.from_pretrained(out), weight=weight,
                                bias=bias, max_length=ctx["max_length"], **ctx["meta"])


class _EncoderAsSession:
    """A CTranslate2 encoder and head behind ONNX Runtime's `session.run(None, feeds) -> [logits]`."""

    def __init__(self, predictor: CTranslate2Predictor):
        self.predictor = predictor

    def run(self, _output_names, feeds):
        lengths = feeds["attention_mask"].sum(1)
        unpadded = {name: [row[:n].tolist() for row, n in zip(feeds[name], lengths)]
                    for name in ("input_ids", "token_type_ids") if name in feeds}
        return [self.predictor.logits(unpadded).astype(np.float32)]


class CTranslate2Logits(OnnxLogits):
    """The labeller's reader (`OnnxLogits`: length-sorted batches, logits in input order) over a CTranslate2 export."""

    def __init__(self, directory: Path, threads: int | None = None):
        predictor = load_ctranslate2(Path(directory), {"max_length": None, "meta": {
            "model": "teacher", "backend": "ctranslate2", "labels": []}}, threads)
        self.session = _EncoderAsSession(predictor)
        self.tokenizer = predictor.tokenizer
        self.inputs = {"input_ids", "attention_mask", "token_type_ids"}


for backend in (Backend("ctranslate2", export_ctranslate2, load_ctranslate2, logits=CTranslate2Logits),
                Backend("ctranslate2-int8", partial(export_ctranslate2, quantization="int8"), load_ctranslate2,
                        INT8, lossy=True, logits=CTranslate2Logits)):
    add_backend(TEACHER_FAMILY, backend)
