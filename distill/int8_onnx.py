"""int8 that keeps a transformer's accuracy in ONNX Runtime: dynamic int8 with per-channel weights, and the few
outlier input channels of each MatMul, found on training text, kept in fp32 (the decomposition of LLM.int8(),
Dettmers et al. 2022).

Why (docs/int8.md): dynamic int8 gives every activation tensor one scale per call. In mpnet (and less so in BERT)
a handful of channels run 30-60x larger than the rest (the FFN's down-projection input, the GELU output, in the
middle layers; the LayerNorm output feeding the FFN), so that one scale rounds every other channel to a few levels.
Each MatMul `y = x @ W` whose calibrated per-channel max |x| has channels past `factor` x its median becomes

    y = (x * keep) @ W_rest  +  x[..., outliers] @ W[outliers]

where `keep` zeroes the outlier channels (so the dynamic scale sees only the rest), W_rest is W with those rows
zeroed (so they do not widen the per-channel weight scales), and the second MatMul, a few rows, stays fp32.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError

CALIBRATION_TEXTS = 128      # training texts the outlier channels are measured on (they are the same text to text)
CALIBRATION_MAX_LENGTH = 128
OUTLIER_FACTOR = 6.0         # a channel is an outlier past this multiple of the median channel's max |x|
MAX_OUTLIERS = 32            # at most this many channels of one MatMul's input stay fp32
OUTLIER_SUFFIX = "_outlier_channels"   # the fp32 MatMuls' names end so


def outlier_channels(absmax: np.ndarray, factor: float = OUTLIER_FACTOR, cap: int = MAX_OUTLIERS) -> np.ndarray:
    """Indices (sorted) of the channels whose max |x| exceeds `factor` x the median channel's, the largest `cap`."""
    largest = np.argsort(-absmax, kind="stable")[:cap]
    return np.sort(largest[absmax[largest] > factor * np.median(absmax)])


def require_texts(texts, limit: int | None = CALIBRATION_TEXTS) -> list[str]:
    """The first `limit` non-empty texts (all of them for None); none at all is the caller's error."""
    texts = [t for t in (texts or []) if t]
    if not texts:
        raise UserError("int8 calibration needs sample texts from the training split and got none; "
                        "give the exporter training texts")
    return texts[:limit]


def calibration_feeds(tokenizer, texts, input_names, max_length: int = CALIBRATION_MAX_LENGTH) -> list[dict]:
    """One unpadded feed per training text: padding would add the pad positions' activations to the statistics."""
    feeds = []
    for text in require_texts(texts):
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        feeds.append({k: v.astype(np.int64) for k, v in enc.items() if k in input_names})
    return feeds


def weighted_matmuls(model) -> list:
    """MatMul nodes whose second input is a weight (not activation x activation, as in attention scores)."""
    weights = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def channel_absmax(model, tensors: list[str], feeds: list[dict]) -> dict[str, np.ndarray]:
    """Max |x| of every last-axis channel of each of `tensors` over the `feeds`."""
    import onnx
    import onnxruntime as ort
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in outputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    absmax: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = dict(zip(names, session.run(None, feed)))
        for t in tensors:
            channels = np.abs(values[t]).reshape(-1, values[t].shape[-1]).max(0)
            absmax[t] = np.maximum(absmax[t], channels) if t in absmax else channels
    return absmax


def split_outlier_channels(model, feeds: list[dict], factor: float = OUTLIER_FACTOR,
                           cap: int = MAX_OUTLIERS) -> list[str]:
    """Rewrite `model` in place: each weighted MatMul with outlier input channels on `feeds` becomes an int8-able
    MatMul over the other channels plus a small fp32 MatMul over the outliers. Returns the fp32 MatMuls' names."""
    from onnx import helper, numpy_helper
    weights = {i.name: i for i in model.graph.initializer}
    targets = weighted_matmuls(model)
    absmax = channel_absmax(model, sorted({n.input[0] for n in targets}), feeds)
    kept_fp32 = []
    for node in targets:
        idx = outlier_channels(absmax[node.input[0]], factor, cap)
        if not len(idx):
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        rest, keep = w.copy(), np.ones(w.shape[0], dtype=w.dtype)
        rest[idx], keep[idx] = 0, 0
        p, x, y = node.name, node.input[0], node.output[0]
        model.graph.initializer.extend([numpy_helper.from_array(rest, f"{p}_w_rest"),
                                        numpy_helper.from_array(w[idx], f"{p}_w_outliers"),
                                        numpy_helper.from_array(keep, f"{p}_keep"),
                                        numpy_helper.from_array(idx.astype(np.int64), f"{p}_outlier_idx")])
        model.graph.node.extend([
            helper.make_node("Mul", [x, f"{p}_keep"], [f"{p}_x_rest"], name=f"{p}_drop_outliers"),
            helper.make_node("Gather", [x, f"{p}_outlier_idx"], [f"{p}_x_outliers"], name=f"{p}_take_outliers",
                             axis=-1),
            helper.make_node("MatMul", [f"{p}_x_outliers", f"{p}_w_outliers"], [f"{p}_y_outliers"],
                             name=p + OUTLIER_SUFFIX),
            helper.make_node("Add", [f"{p}_y_rest", f"{p}_y_outliers"], [y], name=f"{p}_add_outliers")])
        node.input[0], node.input[1], node.output[0] = f"{p}_x_rest", f"{p}_w_rest", f"{p}_y_rest"
        kept_fp32.append(p + OUTLIER_SUFFIX)
    topological_sort(model.graph)
    return kept_fp32


def topological_sort(graph) -> None:
    """Order `graph`'s nodes so each comes after the producers of its inputs (ONNX requires it)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input at {waiting[0].name}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def quantize_keeping_outliers(fp32_path: Path, out_path: Path, tokenizer, texts, factor: float = OUTLIER_FACTOR,
                              cap: int = MAX_OUTLIERS, per_channel: bool = True) -> dict:
    """The transformer family's onnx-int8 recipe: outlier channels split off on `texts` (training text), then
    ONNX Runtime dynamic int8 (s8 weights, per output channel) of everything else. Returns what it did."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = onnx.load(str(fp32_path))
    feeds = calibration_feeds(tokenizer, texts, {i.name for i in model.graph.input})
    kept_fp32 = split_outlier_channels(model, feeds, factor, cap) if factor else []
    # The fused ORT graph's contrib ops carry no type info: DefaultTensorType tells the quantizer they are float.
    quantize_dynamic(model, out_path, weight_type=QuantType.QInt8, per_channel=per_channel,
                     nodes_to_exclude=kept_fp32, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"calibration_texts": len(feeds), "fp32_outlier_matmuls": len(kept_fp32), "outlier_factor": factor}
