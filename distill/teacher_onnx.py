"""The teacher (or any Hugging Face sequence classifier) as an ONNX Runtime graph: optimum's export, ORT's graph
optimisation, int8 (distill/int8_onnx.py); and `OnnxLogits`, which computes logits with such a graph.

They are the transformer family's exporters in the one registry (distill/families/builtin.py): the labeller
(distill/labelling.py) runs the teacher through the same files that bench validates, times and serves.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import numpy as np

@contextlib.contextmanager
def quiet_exporters():
    """Silence the export libraries' advice that needs no action here and reads as trouble in a user's log:
    TracerWarning (constant masks in a trace), the LSTM batch-size note, ONNX Runtime's "consider pre-processing
    before quantization", optimum's tied-weight deduplication notes, deprecations. Errors still raise."""
    import logging
    import warnings
    loggers = [logging.getLogger(name) for name in ("", "optimum", "onnxruntime", "transformers", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        try:
            from torch.jit import TracerWarning
            warnings.simplefilter("ignore", TracerWarning)
        except ImportError:  # torch moved it; the catch-all above still applies to UserWarning subclasses
            pass
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


ONNX_FILES = {"onnx": "model.onnx", "ort-opt": "model_optimized.onnx", "onnx-int8": "model_quantized.onnx"}


@contextlib.contextmanager
def hf_dir(source):
    """A Hugging Face model directory for `source`: a directory as it is, or a transformer student (with `module_`
    and `tokenizer_`) saved to a temporary one, so the teacher's exporters serve both."""
    if isinstance(source, (str, Path)):
        yield Path(source)
        return
    with tempfile.TemporaryDirectory(prefix="student-hf-") as tmp:
        source.module_.save_pretrained(tmp)
        source.tokenizer_.save_pretrained(tmp)
        yield Path(tmp)


def export_onnx(source, out: Path) -> None:
    from optimum.exporters.onnx import main_export
    with hf_dir(source) as source_dir:
        main_export(str(source_dir), out, task="text-classification", do_validation=True)


def export_ort_opt(source, out: Path) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig
    with hf_dir(source) as source_dir:
        model = ORTModelForSequenceClassification.from_pretrained(str(source_dir), export=True)
        ORTOptimizer.from_pretrained(model).optimize(OptimizationConfig(optimization_level=2), save_dir=out)
    _keep_only(out, ONNX_FILES["ort-opt"])


def export_onnx_int8(source, out: Path, sample_texts) -> None:
    """int8 on top of the ORT-optimised graph, keeping the accuracy (distill/int8_onnx.py): dynamic int8 with
    per-channel weights, and the outlier input channels found on `sample_texts` (training text) kept in fp32.
    optimum's ORTQuantizer cannot pass the DefaultTensorType option that the fused graph needs, so onnxruntime's
    quantizer is called."""
    from transformers import AutoTokenizer

    from .int8_onnx import quantize_keeping_outliers, require_texts
    texts = require_texts(sample_texts)
    export_ort_opt(source, out)
    info = quantize_keeping_outliers(out / ONNX_FILES["ort-opt"], out / ONNX_FILES["onnx-int8"],
                                     AutoTokenizer.from_pretrained(out), texts)
    (out / ONNX_FILES["ort-opt"]).unlink()
    (out / "int8.json").write_text(json.dumps(info, indent=1))


def _keep_only(out: Path, name: str) -> None:
    for path in out.glob("*.onnx"):
        if path.name != name:
            path.unlink()


def session(path: Path, threads: int | None = None, provider: str = "CPUExecutionProvider", spinning: bool = True):
    """`spinning=False` stops idle ORT threads from busy-waiting, which would starve other engines timed beside
    this session in one process."""
    import onnxruntime as ort
    import torch
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=[provider])


class OnnxLogits:
    """Logits of an exported classifier directory (its .onnx file and tokenizer), batched by length like
    `teacher.predict_logits`."""

    def __init__(self, directory: Path, threads: int | None = None):
        from transformers import AutoTokenizer
        directory = Path(directory)
        self.session = session(next(directory.glob("*.onnx")), threads)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, texts: list[str], max_length: int, batch_size: int = 64, progress=False) -> np.ndarray:
        from tqdm.auto import tqdm

        from .batching import length_batches
        out = None
        batches = length_batches([len(t) for t in texts], batch_size)
        for batch in tqdm(batches, desc="labelling", disable=not progress, leave=False):
            enc = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=max_length,
                                 return_tensors="np")
            logits = self.session.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs})[0]
            if out is None:
                out = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
            out[batch] = logits
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)
