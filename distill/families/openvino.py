"""OpenVINO backends of the transformer family: the model exported to OpenVINO IR by optimum-intel and run by
OpenVINO's CPU plugin in fp32 (`openvino`), in bf16 (`openvino-bf16`: AMX / AVX512-BF16 matmuls) and in int8
(`openvino-int8`: NNCF post-training quantisation of weights and activations, calibrated on the sample texts).

Imported by distill/families/__init__.py when openvino, nncf and optimum-intel are installed (requirements.txt);
docs/engines.md has the measurements.
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from ..int8_onnx import require_texts
from ..isolated import call_isolated
from ..teacher_onnx import OnnxLogits, hf_dir
from .predictor import Predictor
from .registry import INT8, TEACHER_FAMILY, Backend, add_backend

MODEL_XML = "openvino_model.xml"
# bf16 keeps 8 bits of mantissa: activations round to ~0.4%, and a 6-12 layer encoder moves probabilities by up to a
# few hundredths (measured: docs/engines.md). A broken export moves them by their spread and flips labels: the
# lossy rule (LOSSY_MIN_AGREEMENT) catches that.
BF16 = 0.05


@dataclass
class OpenVINOPredictor(Predictor):
    """A compiled OpenVINO classifier: prepare = the Hugging Face tokenizer, run = one synchronous inference, on an
    infer request of the calling thread's own (a request runs one inference at a time; serve calls from several)."""
    compiled: object = None
    tokenizer: object = None
    input_names: frozenset = field(default_factory=frozenset)
    max_length: int = 64
    requests: threading.local = field(default_factory=threading.local, repr=False)

    def prepare(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}

    def run(self, prepared):
        if not hasattr(self.requests, "request"):
            self.requests.request = self.compiled.create_infer_request()
        logits = self.requests.request.infer(prepared)[0]
        return softmax(np.asarray(logits, dtype=np.float64), axis=1)


def compile_model(xml: Path, precision: str, threads: int | None = None):
    """The model compiled for the CPU on `threads` threads (torch's count, as ONNX Runtime sessions get), one
    latency-optimised stream."""
    import openvino as ov
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    return ov.Core().compile_model(str(xml), "CPU", config)


def export_openvino(source, out, sample_texts):
    """The model as OpenVINO IR with fp32 weights, beside its tokenizer."""
    from optimum.intel import OVModelForSequenceClassification
    from transformers import AutoTokenizer
    with hf_dir(source) as source_dir:
        model = OVModelForSequenceClassification.from_pretrained(str(source_dir), export=True, compile=False)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source_dir).save_pretrained(out)


def export_openvino_half(source, out, sample_texts):
    """The IR with its weights stored in fp16: half the bytes; the bf16 model rounds them to bf16 anyway."""
    import openvino as ov
    export_openvino(source, out, sample_texts)
    xml = Path(out) / MODEL_XML
    _replace(xml, ov.Core().read_model(str(xml)), compress_to_fp16=True)


def export_openvino_int8(source, out, sample_texts):
    """The fp32 IR quantised by `quantize_ir` on all of `sample_texts` ([export] calibration_texts of them)."""
    from transformers import AutoTokenizer
    sample_texts = require_texts(sample_texts, limit=None)
    export_openvino(source, out, sample_texts)
    xml = Path(out) / MODEL_XML
    _move_ir(quantize_ir(xml, AutoTokenizer.from_pretrained(out), sample_texts, xml.with_name("quantized.xml")), xml)


def quantize_ir(xml: Path, tokenizer, texts: list[str], written: Path, keep_fp32: tuple[str, ...] = ()) -> Path:
    """The IR at `xml` quantised by NNCF and saved as the IR `written` (returned): int8 weights (one scale per
    output channel) and activations (ranges observed on `texts`, one at a time), with NNCF's transformer rules
    (SmoothQuant; softmax, layer norm and the attention-mask arithmetic left in float); the ops named in `keep_fp32`
    stay in float (scripts/openvino_int8_study.py tries that on the FFN down-projections). NNCF runs in a fresh
    process (distill/isolated.py): a crash in OpenVINO's native code is retried there, not fatal here."""
    encoded = [{k: v.astype(np.int64) for k, v in tokenizer([text], truncation=True, return_tensors="np").items()}
               for text in texts]
    call_isolated(_quantize, str(xml), encoded, tuple(keep_fp32), str(written), what=f"NNCF quantising {xml}",
                  fix='run it again, or leave OpenVINO int8 out: add "transformer/openvino-int8" to [export] skip '
                      'and name a [labelling] backend other than auto')
    return Path(written)


def _quantize(xml: str, encoded: list[dict], keep_fp32: tuple[str, ...], written: str) -> None:
    import nncf
    import openvino as ov
    model = ov.Core().read_model(xml)
    names = {i.get_any_name() for i in model.inputs}   # the tokenizer may give more (token_type_ids for mpnet)
    feeds = [{k: v for k, v in e.items() if k in names} for e in encoded]
    ignored = {"ignored_scope": nncf.IgnoredScope(names=list(keep_fp32))} if keep_fp32 else {}
    with contextlib.redirect_stdout(io.StringIO()):   # NNCF's progress bars, which no setting turns off
        quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(feeds), **ignored)
    ov.save_model(quantized, written)


def ffn_down_projections(xml: Path) -> list[str]:
    """The MatMuls fed by a GELU (each layer's FFN down-projection, whose input carries the outlier channels:
    docs/int8.md), in layer order."""
    import openvino as ov
    return [op.get_friendly_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()
            if op.get_type_name() == "MatMul" and op.input_value(0).get_node().get_type_name() == "Gelu"]


def _replace(xml: Path, model, compress_to_fp16=False) -> None:
    """Write `model` over the IR at `xml` (written beside it first: its weights may be read from the old file)."""
    import openvino as ov
    written = xml.with_name("rewritten.xml")
    ov.save_model(model, str(written), compress_to_fp16=compress_to_fp16)
    _move_ir(written, xml)


def _move_ir(written: Path, xml: Path) -> None:
    os.replace(written, xml)
    os.replace(written.with_suffix(".bin"), xml.with_suffix(".bin"))


def load_openvino(out, ctx, precision="f32"):
    """OpenVINO's CPU plugin runs an fp32 model in bf16 by default on CPUs with AMX: fp32 asks for f32."""
    from transformers import AutoTokenizer
    compiled = compile_model(Path(out) / MODEL_XML, precision)
    return OpenVINOPredictor(compiled=compiled, tokenizer=AutoTokenizer.from_pretrained(out),
                             input_names=frozenset(i.get_any_name() for i in compiled.inputs),
                             max_length=ctx["max_length"], **ctx["meta"])


class _InferRequestAsSession:
    """An OpenVINO infer request behind ONNX Runtime's `session.run(None, feeds) -> [logits]`."""

    def __init__(self, request):
        self.request = request

    def run(self, _output_names, feeds):
        return [np.array(self.request.infer(feeds)[0])]


class OpenVINOLogits(OnnxLogits):
    """The labeller's reader (`OnnxLogits`: length-sorted batches, logits in input order) over an OpenVINO model."""

    def __init__(self, directory: Path, threads: int | None = None, precision: str = "f32"):
        from transformers import AutoTokenizer
        compiled = compile_model(Path(directory) / MODEL_XML, precision, threads)
        self.session = _InferRequestAsSession(compiled.create_infer_request())
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.inputs = {i.get_any_name() for i in compiled.inputs}


for backend in (
        Backend("openvino", export_openvino, load_openvino, logits=OpenVINOLogits),
        # the labeller tries these two under "auto": on mpnet 5-9x the texts/s of ONNX Runtime (docs/engines.md)
        Backend("openvino-bf16", export_openvino_half, partial(load_openvino, precision="bf16"), BF16, lossy=True,
                logits=partial(OpenVINOLogits, precision="bf16"), auto_labeller=True),
        Backend("openvino-int8", export_openvino_int8, load_openvino, INT8, lossy=True, logits=OpenVINOLogits,
                auto_labeller=True, calibrated=True)):
    add_backend(TEACHER_FAMILY, backend)
