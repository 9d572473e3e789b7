"""What a cut of the teacher with narrower feed-forward blocks costs at batch 1 in OpenVINO int8, before training one.

    python scripts/pruning_latency_study.py artifacts/full/teacher/model --split artifacts/full/data/split.parquet \
        --shape 12:1 --shape 6:1 --shape 6:0.5 --shape 6:0.375 --shape 6:0.25 --shape 5:0.5 --csv pruning.csv

A shape is `LAYERS:FFN_KEEP`: the teacher cut to LAYERS layers (every (L/k)-th, as the `transformer` students are)
with FFN_KEEP of each layer's feed-forward neurons kept (distill/students/pruning.py, scored on training text). Each
is exported and quantised as the openvino and openvino-int8 backends do (NNCF on `--calibration-texts` training
texts) and timed at batch 1, model only, in this process: the shapes take turns, text by text, over `--passes`
passes of the first `--timing-texts` test texts (medians). Weights are the teacher's, untrained for the cut: the
latency is the architecture's; what a trained one scores is the stage's to say.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.environment import cpu_flags, cpu_model  # noqa: E402
from distill.errors import UserError, one_line_errors  # noqa: E402
from distill.families.openvino import compile_model, quantize_ir  # noqa: E402
from scripts.study_io import add_timing_options, write_rows  # noqa: E402

MAX_LENGTH = 64


def parse_shape(text: str) -> tuple[int, float]:
    """'6:0.375' -> (6, 0.375)."""
    layers, _, keep = text.partition(":")
    try:
        shape = int(layers), float(keep)
    except ValueError:
        shape = None
    if shape is None or shape[0] < 1 or not 0 < shape[1] <= 1:
        raise UserError(f"--shape {text!r}: expected LAYERS:FFN_KEEP, e.g. 6:0.375 (layers >= 1, 0 < keep <= 1)")
    return shape


def int8_ir(teacher, tokenizer, layers: int, keep: float, train: list[str], calibration: int, directory: Path):
    """(the shape's OpenVINO int8 IR, its intermediate size, its parameter count), exported and quantised by the
    openvino and openvino-int8 backends' own functions."""
    from distill.families.openvino import MODEL_XML, export_openvino
    from distill.students.pruning import prune_feed_forward
    from distill.students.transformer import cut_model
    model, _ = cut_model(teacher, layers, "uniform")
    prune_feed_forward(model, keep, tokenizer, train, MAX_LENGTH)
    source, exported = directory / f"{layers}-{keep}-torch", directory / f"{layers}-{keep}-openvino"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    export_openvino(source, exported, train[:8])
    params = sum(p.numel() for p in model.parameters())
    int8 = quantize_ir(exported / MODEL_XML, tokenizer, train[:calibration], directory / f"{layers}-{keep}-int8.xml")
    return int8, model.config.intermediate_size, params


def run(teacher_dir: Path, split: pd.DataFrame, shapes: list[str], calibration: int, timing_texts: int,
        passes: int, threads: int) -> list[dict]:
    from distill.teacher import load_pretrained
    tokenizer, teacher = load_pretrained(str(teacher_dir))
    planned = [parse_shape(shape) for shape in shapes]   # every shape checked before the slow part
    train = split[split["split"] == "train"]["text"].tolist()
    test = split[split["split"] == "test"]["text"].tolist()[:timing_texts]
    requests, built = {}, {}
    with tempfile.TemporaryDirectory(prefix="pruning-study-") as tmp:
        for layers, keep in planned:
            started = time.perf_counter()
            xml, width, params = int8_ir(teacher, tokenizer, layers, keep, train, calibration, Path(tmp))
            print(f"{layers}:{keep}: built and quantised in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            compiled = compile_model(xml, "f32", threads)
            inputs = {i.get_any_name() for i in compiled.inputs}
            requests[(layers, keep)] = compiled.create_infer_request()
            built[(layers, keep)] = (width, params)
        feeds = [{k: v.astype(np.int64) for k, v in tokenizer([t], truncation=True, max_length=MAX_LENGTH,
                                                              return_tensors="np").items() if k in inputs}
                 for t in test]
        times = {shape: [] for shape in requests}
        for _ in range(passes):
            for feed in feeds:
                for shape, request in requests.items():
                    started = time.perf_counter()
                    request.infer(feed)
                    times[shape].append(time.perf_counter() - started)
    first = float(np.median(next(iter(times.values()))))
    flags = " ".join(cpu_flags())
    return [{"layers": layers, "ffn_keep": keep, "intermediate_size": built[(layers, keep)][0],
             "params": built[(layers, keep)][1], "calibration_texts": calibration,
             "batch1_model_ms_median": round(float(np.median(times[(layers, keep)])) * 1000, 2),
             "vs_first_shape": round(float(np.median(times[(layers, keep)])) / first, 3),
             "timed_texts": len(times[(layers, keep)]), "threads": threads, "cpu": cpu_model(), "cpu_flags": flags}
            for layers, keep in requests]


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("teacher", type=Path, help="the fine-tuned teacher's model directory: artifacts/<run>/teacher/model")
    p.add_argument("--split", required=True, type=Path, help="the run's data/split.parquet (text, label, split)")
    p.add_argument("--shape", action="append", required=True, help="LAYERS:FFN_KEEP; repeat for several")
    p.add_argument("--calibration-texts", type=int, default=300, help="NNCF calibration texts (default 300)")
    add_timing_options(p)
    args = p.parse_args(argv)
    if not (args.teacher / "config.json").is_file():
        raise UserError(f"{args.teacher} holds no config.json: give the teacher's model directory "
                        "(artifacts/<run>/teacher/model)")
    rows = run(args.teacher, pd.read_parquet(args.split), args.shape, args.calibration_texts, args.timing_texts,
               args.passes, args.threads)
    write_rows(rows, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
