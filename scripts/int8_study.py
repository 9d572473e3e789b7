"""Why int8 costs a fine-tuned transformer accuracy, and which recipe keeps it (docs/int8.md).

    python scripts/int8_study.py --teacher artifacts/full/teacher/model --split artifacts/full/data/split.parquet \
        --json int8-study.json

On the dev split: the fp32 teacher in PyTorch (the reference) against each int8 recipe, in ONNX Runtime (on the
ORT-optimised graph, as the onnx-int8 backend) and in PyTorch: accuracy, points lost, argmax agreement, mean
|delta logit|, max |delta p|, and batch-1 latency against PyTorch eager (medians, interleaved in this process).
Then the diagnosis: which MatMul inputs have outlier channels, and how much each group of MatMuls costs when it
alone is int8. Calibration reads the first training texts, never dev or test.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill import int8_onnx, int8_torch  # noqa: E402
from distill.batching import length_batches  # noqa: E402
from distill.teacher import load_pretrained, predict_logits  # noqa: E402
from distill.teacher_onnx import export_ort_opt, quiet_exporters, session  # noqa: E402

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
MAX_LENGTH = 64
# Groups of a BERT-family graph's weighted MatMuls, by name (optimum's export keeps the module paths); for the
# diagnosis only: the exporters' rule looks at the activations, not at names.
GROUPS = {"attention q/k/v": r"attention/self/(query|key|value)|attn/[qkv]/|[qkv]_lin|^Attention",
          "attention output": r"attention/output/dense|attn/o/|out_lin",
          "FFN up (input: LayerNorm)": r"intermediate/dense|lin1",
          "FFN down (input: GELU)": r"(?<!attention)/output/dense|lin2",
          "pooler / classifier": r"pooler|classifier|pre_classifier"}


def dynamic(**options):
    def build(fp32, out, tokenizer, texts):
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
        options.setdefault("weight_type", QuantType.QInt8)
        quantize_dynamic(fp32, out, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **options)
    return build


def static(method: str, split_factor: float = 0.0):
    def build(fp32, out, tokenizer, texts):
        import onnx
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_static)
        model = onnx.load(str(fp32))
        feeds = int8_onnx.calibration_feeds(tokenizer, texts, {i.name for i in model.graph.input})
        if method != "MinMax":   # histograms need one shape: pad every calibration text to the same length
            enc = tokenizer(int8_onnx.require_texts(texts), padding="max_length", truncation=True,
                            max_length=MAX_LENGTH, return_tensors="np")
            feeds = [{k: v[i:i + 1].astype(np.int64) for k, v in enc.items() if k in feeds[0]}
                     for i in range(len(enc["input_ids"]))]
        kept = int8_onnx.split_outlier_channels(model, feeds, split_factor) if split_factor else []
        matmuls = [n.name for n in int8_onnx.weighted_matmuls(model) if n.name not in kept]
        quantize_static(model, out, _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=matmuls,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return build


class _Reader:
    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def excluding(pattern: str):
    def build(fp32, out, tokenizer, texts):
        import onnx
        graph = onnx.load(str(fp32), load_external_data=False).graph
        names = [n.name for n in graph.node if re.search(pattern, n.name)]
        dynamic(per_channel=True, nodes_to_exclude=names)(fp32, out, tokenizer, texts)
    return build


def split(factor: float, per_channel: bool = True):
    def build(fp32, out, tokenizer, texts):
        int8_onnx.quantize_keeping_outliers(fp32, out, tokenizer, texts, factor=factor, per_channel=per_channel)
    return build


def onnx_recipes() -> dict:
    from onnxruntime.quantization import QuantType
    return {
        "onnx dynamic, per-tensor (old onnx-int8)": dynamic(),
        "onnx dynamic, per-channel": dynamic(per_channel=True),
        "onnx dynamic, per-channel, reduce_range": dynamic(per_channel=True, reduce_range=True),
        "onnx dynamic, per-channel, u8 weights (u8u8)": dynamic(per_channel=True, weight_type=QuantType.QUInt8),
        "onnx dynamic, per-channel, FFN down fp32": excluding(GROUPS["FFN down (input: GELU)"]),
        "onnx static QDQ, per-channel, MinMax": static("MinMax"),
        "onnx static QDQ, per-channel, Percentile": static("Percentile"),
        "onnx static QDQ, MinMax, outliers fp32 (6x)": static("MinMax", int8_onnx.OUTLIER_FACTOR),
        "onnx dynamic, per-tensor, outliers fp32 (6x)": split(int8_onnx.OUTLIER_FACTOR, per_channel=False),
        "onnx dynamic, per-channel, outliers fp32 (8x)": split(8.0),
        "onnx dynamic, per-channel, outliers fp32 (4x)": split(4.0),
        "onnx dynamic, per-channel, outliers fp32 (6x) = new onnx-int8": split(int8_onnx.OUTLIER_FACTOR),
    }


def torch_recipes() -> dict:
    return {
        "torch dynamic, per-tensor (old torch-int8)": dict(factor=0, per_channel=False),
        "torch dynamic, per-channel": dict(factor=0, per_channel=True),
        "torch dynamic, per-channel, outliers fp32 (4x)": dict(factor=4.0, per_channel=True),
        "torch dynamic, per-channel, outliers fp32 (6x) = new torch-int8": dict(per_channel=True),
    }


class OnnxRunner:
    def __init__(self, path, tokenizer):
        self.session, self.tokenizer = session(path, spinning=False), tokenizer   # threads: torch's
        self.inputs = {i.name for i in self.session.get_inputs()}

    def feed(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs}

    def logits(self, texts):
        out = np.zeros((len(texts), self.session.get_outputs()[0].shape[-1] or 2), dtype=np.float32)
        for rows in length_batches([len(t) for t in texts], 64):
            out[rows] = self.session.run(None, self.feed([texts[i] for i in rows]))[0]
        return out

    def one(self, text):
        self.session.run(None, self.feed([text]))


class TorchRunner:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    def logits(self, texts):
        return predict_logits(self.model, self.tokenizer, texts, MAX_LENGTH, 64, progress=False)

    def one(self, text):
        import torch
        with torch.no_grad():
            self.model(**self.tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))


def compare(logits, reference, gold) -> dict:
    from distill.students.soft import softmax
    accuracy, fp32 = float(np.mean(logits.argmax(1) == gold)), float(np.mean(reference.argmax(1) == gold))
    return {"accuracy": accuracy, "points_lost": round(100 * (fp32 - accuracy), 2),
            "agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            "mean_abs_dlogit": float(np.abs(logits - reference).mean()),
            "max_abs_dp": float(np.abs(softmax(logits) - softmax(reference)).max())}


def batch1_medians(runners: dict, texts: list[str]) -> dict:
    """Median batch-1 latency (ms) of each runner, the runners interleaved text by text so load hits all alike."""
    for runner in runners.values():
        for text in texts[:3]:
            runner.one(text)
    times = {name: [] for name in runners}
    for text in texts:
        for name, runner in runners.items():
            started = time.perf_counter()
            runner.one(text)
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def group_of(name: str) -> str:
    return next((group for group, pattern in GROUPS.items() if re.search(pattern, name)), "other")


def outlier_table(fp32: Path, tokenizer, texts) -> list[dict]:
    """Per weighted MatMul of the graph: how far its input's largest channel stands above the median channel."""
    import onnx
    model = onnx.load(str(fp32))
    feeds = int8_onnx.calibration_feeds(tokenizer, texts, {i.name for i in model.graph.input})
    nodes = int8_onnx.weighted_matmuls(model)
    absmax = int8_onnx.channel_absmax(model, sorted({n.input[0] for n in nodes}), feeds)
    rows = []
    for node in nodes:
        channels = absmax[node.input[0]]
        top = np.argsort(-channels)[:3]
        rows.append({"matmul": node.name, "group": group_of(node.name), "max_abs_x": round(float(channels.max()), 2),
                     "max_over_median": round(float(channels.max() / np.median(channels)), 1),
                     "outliers": int(len(int8_onnx.outlier_channels(channels))), "top_channels": top.tolist()})
    return rows


def sensitivity(fp32: Path, work: Path, tokenizer, texts, reference, gold) -> list[dict]:
    """The old recipe (dynamic, per-tensor) applied to one group of MatMuls at a time, the rest fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    graph = onnx.load(str(fp32), load_external_data=False).graph
    names = [n.name for n in graph.node if n.op_type in ("MatMul", "Attention")]
    rows = []
    for group in [*GROUPS, "other"]:
        members = [n for n in names if group_of(n) == group]
        if not members:
            continue
        out = work / "sensitivity.onnx"
        quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, nodes_to_quantize=members,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        rows.append({"int8 alone": group, "nodes": len(members),
                     **compare(OnnxRunner(out, tokenizer).logits(texts), reference, gold)})
    return rows


def evaluate_recipes(args, work: Path, tokenizer, texts, reference, gold, calibration):
    """Every selected recipe: its logits compared with the reference, and its runner kept for the timing."""
    fp32 = work / "opt" / "model_optimized.onnx"
    rows, runners = [], {}
    selected = set(args.recipes.split(",")) if args.recipes else None
    for name, build in onnx_recipes().items():
        if selected and not any(s in name for s in selected):
            continue
        out, started = work / f"recipe{len(rows)}.onnx", time.time()
        try:
            with quiet_exporters():
                build(fp32, out, tokenizer, calibration)
        except Exception as exc:   # a recipe ONNX Runtime cannot build for this graph is a finding, not a stop
            rows.append({"recipe": name, "failed": f"{type(exc).__name__}: {str(exc)[:120]}"})
            print(f"  {name}: failed ({rows[-1]['failed']})", flush=True)
            continue
        rows.append(_row(name, OnnxRunner(out, tokenizer), started, texts, reference, gold, runners))
    for name, options in torch_recipes().items():
        if selected and not any(s in name for s in selected):
            continue
        started = time.time()
        model = int8_torch.quantize_keeping_outliers(load_pretrained(args.teacher)[1], tokenizer, calibration,
                                                     **options)
        rows.append(_row(name, TorchRunner(model, tokenizer), started, texts, reference, gold, runners))
    return rows, runners


def _row(name, runner, started, texts, reference, gold, runners) -> dict:
    built = time.time() - started
    row = {"recipe": name, **compare(runner.logits(texts), reference, gold), "build_s": round(built, 1)}
    runners[name] = runner
    print(f"  {name}: {row['points_lost']:+.2f} points, mean |dlogit| {row['mean_abs_dlogit']:.3f}", flush=True)
    return row


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in CPU_FLAGS if f in flags]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="a fine-tuned sequence-classifier directory")
    p.add_argument("--split", required=True, help="the run's data/split.parquet (text, label, split)")
    p.add_argument("--json", help="write the tables here")
    p.add_argument("--dev-texts", type=int, default=0, help="the first N dev texts (0: all)")
    p.add_argument("--timing-texts", type=int, default=50, help="dev texts timed at batch 1")
    p.add_argument("--recipes", help="comma-separated substrings of the recipe names to run (default: all)")
    p.add_argument("--threads", type=int, default=1, help="threads of every engine (default 1: on a busy machine "
                   "two OpenMP threads wait on each other, PyTorch eager took 400 ms instead of 8 here)")
    p.add_argument("--no-diagnosis", action="store_true", help="skip the outlier and sensitivity tables")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    split = pd.read_parquet(args.split)
    dev = split[split["split"] == "dev"]
    dev = dev.iloc[:args.dev_texts] if args.dev_texts else dev
    texts, gold = dev["text"].tolist(), dev["label"].to_numpy()
    calibration = split[split["split"] == "train"]["text"].tolist()[:int8_onnx.CALIBRATION_TEXTS]
    tokenizer, model = load_pretrained(args.teacher)
    reference = predict_logits(model.eval(), tokenizer, texts, MAX_LENGTH, 64, progress=False)
    report = {"teacher": str(args.teacher), "dev_texts": len(texts), "calibration_texts": len(calibration),
              "cpu_flags": cpu_flags(), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="int8-study-") as tmp:
        work = Path(tmp)
        with quiet_exporters():
            export_ort_opt(args.teacher, work / "opt")
        fp32 = work / "opt" / "model_optimized.onnx"
        rows, runners = evaluate_recipes(args, work, tokenizer, texts, reference, gold, calibration)
        runners = {"torch eager fp32": TorchRunner(model, tokenizer),
                   "onnx ort-opt fp32": OnnxRunner(fp32, tokenizer), **runners}
        rows = [{"recipe": "torch eager fp32", **compare(reference, reference, gold)},
                {"recipe": "onnx ort-opt fp32", **compare(runners["onnx ort-opt fp32"].logits(texts), reference,
                                                          gold)}, *rows]
        report.update(recipes=rows, **timed(runners, rows, texts[:args.timing_texts]))
        save(report, args.json)   # a long diagnosis that is cut short keeps the table
        del runners
        if not args.no_diagnosis:
            report.update(outliers=outlier_table(fp32, tokenizer, calibration),
                          sensitivity=sensitivity(fp32, work, tokenizer, texts, reference, gold))
            save(report, args.json)
    print_report(report)
    return 0


def timed(runners: dict, rows: list[dict], texts: list[str]) -> dict:
    """Batch-1 latency and speedup over PyTorch eager, written into `rows`."""
    latency = batch1_medians(runners, texts)
    for row in rows:
        if row["recipe"] in latency:
            row["batch1_ms"] = round(latency[row["recipe"]], 1)
            row["speedup_vs_eager"] = round(latency["torch eager fp32"] / latency[row["recipe"]], 2)
    return {"eager_batch1_ms": round(latency["torch eager fp32"], 1), "timing_texts": len(texts)}


def save(report: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=1))


def print_report(report: dict) -> None:
    from tabulate import tabulate
    print(f"\n{report['teacher']}: {report['dev_texts']} dev texts, calibrated on {report['calibration_texts']} "
          f"training texts; CPU flags {' '.join(report['cpu_flags'])}; {report['threads']} thread(s); PyTorch "
          f"eager batch 1: {report['eager_batch1_ms']} ms (median of {report['timing_texts']} texts)\n")
    print(tabulate(report["recipes"], headers="keys", tablefmt="github", floatfmt=".4g"))
    if "outliers" in report:
        worst = sorted(report["outliers"], key=lambda r: -r["max_over_median"])[:15]
        print("\nMatMul inputs with the largest outlier channels (max |x| of a channel over the median channel's):\n")
        print(tabulate(worst, headers="keys", tablefmt="github"))
        print("\nEach group alone in int8 (dynamic, per-tensor), the rest fp32:\n")
        print(tabulate(report["sensitivity"], headers="keys", tablefmt="github", floatfmt=".4g"))


if __name__ == "__main__":
    sys.exit(main())
