"""torch-int8 that keeps a transformer's accuracy: PyTorch dynamic int8 with per-channel weights, and each Linear's
outlier input channels (the rule of distill/int8_onnx.py, measured on training text) kept in fp32."""
from __future__ import annotations

import numpy as np
import torch

from .int8_onnx import CALIBRATION_MAX_LENGTH, MAX_OUTLIERS, OUTLIER_FACTOR, outlier_channels, require_texts


class OutlierSplitLinear(torch.nn.Module):
    """`linear(x)` as an int8-able Linear over the ordinary input channels plus an fp32 product over the outliers."""

    def __init__(self, linear: torch.nn.Linear, outliers: np.ndarray):
        super().__init__()
        idx = torch.as_tensor(outliers, dtype=torch.long)
        self.rest = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            self.rest.weight.copy_(linear.weight)
            self.rest.weight[:, idx] = 0
            if linear.bias is not None:
                self.rest.bias.copy_(linear.bias)
        keep = torch.ones(linear.in_features)
        keep[idx] = 0
        self.register_buffer("keep", keep)
        self.register_buffer("idx", idx)
        self.register_buffer("outlier_weight", linear.weight.detach()[:, idx].t().contiguous())

    def forward(self, x):
        return self.rest(x * self.keep) + x.index_select(-1, self.idx) @ self.outlier_weight


def linear_input_absmax(model, tokenizer, texts) -> dict[str, np.ndarray]:
    """Max |x| of every input channel of each Linear of `model`, one unpadded text at a time."""
    absmax: dict[str, np.ndarray] = {}

    def record(name):
        def hook(_module, args):
            channels = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).numpy()
            absmax[name] = np.maximum(absmax[name], channels) if name in absmax else channels
        return hook

    handles = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            for text in texts:
                model(**tokenizer([text], truncation=True, max_length=CALIBRATION_MAX_LENGTH, return_tensors="pt"))
    finally:
        for handle in handles:
            handle.remove()
    return absmax


def split_linear_outliers(model, absmax: dict[str, np.ndarray], factor: float = OUTLIER_FACTOR,
                          cap: int = MAX_OUTLIERS) -> int:
    """Replace, in place, each Linear with outlier input channels by an OutlierSplitLinear; returns how many."""
    replaced = 0
    for name, channels in absmax.items():
        idx = outlier_channels(channels, factor, cap)
        if not len(idx):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, OutlierSplitLinear(getattr(parent, child), idx))
        replaced += 1
    return replaced


def quantize_keeping_outliers(model, tokenizer, texts, factor: float = OUTLIER_FACTOR, cap: int = MAX_OUTLIERS,
                              per_channel: bool = True):
    """The transformer family's torch-int8 recipe: outliers split off on `texts` (training text), then dynamic
    int8 of every Linear (the fp32 outlier products are no Linear, so they stay fp32)."""
    texts = require_texts(texts)
    model.eval()
    if factor:
        split_linear_outliers(model, linear_input_absmax(model, tokenizer, texts), factor, cap)
    qconfig = (torch.ao.quantization.per_channel_dynamic_qconfig if per_channel
               else torch.ao.quantization.default_dynamic_qconfig)
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
