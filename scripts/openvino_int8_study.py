"""OpenVINO int8 recipes for one exported transformer: how many calibration texts, which FFN layers stay fp32.

    python scripts/openvino_int8_study.py artifacts/full/export/transformer_deep-distilled/openvino \
        --split artifacts/full/data/split.parquet --recipe 128 --recipe 1000 --recipe 1000:ffn-down \
        --recipe 1000:ffn-down=5,6,7 --csv int8-recipes.csv

A recipe is `TEXTS[:ffn-down[=LAYERS]]`: the openvino-int8 backend's quantisation (distill/families/openvino.py,
NNCF) calibrated on the first TEXTS training texts, with the FFN down-projections (the MatMuls fed by a GELU) of
every layer, or of the listed ones (counted from 0), left in fp32. The fp32 export and every recipe are scored on
the test split (accuracy, argmax agreement with fp32) and timed at batch 1, model only, in this process: the
variants take turns, text by text, over `--passes` passes of the first `--timing-texts` test texts (medians).
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
from distill.families.openvino import MODEL_XML, compile_model, ffn_down_projections, quantize_ir  # noqa: E402
from scripts.study_io import add_timing_options, write_rows  # noqa: E402

MAX_LENGTH = 64


def parse_recipe(text: str) -> tuple[int, tuple[int, ...] | None]:
    """'1000' -> (1000, None): all int8; '1000:ffn-down' -> (1000, ()): every layer's in fp32;
    '1000:ffn-down=5,6' -> (1000, (5, 6))."""
    count, _, scope = text.partition(":")
    layers, _, listed = scope.partition("=")
    try:
        texts = int(count)
        chosen = None if not scope else tuple(int(i) for i in listed.split(",")) if listed else ()
    except ValueError:
        chosen = texts = None
    if texts is None or texts < 1 or (scope and layers != "ffn-down"):
        raise UserError(f"--recipe {text!r}: expected TEXTS[:ffn-down[=LAYERS]], e.g. 1000 or 1000:ffn-down=5,6,7")
    return texts, chosen


def kept_fp32(xml: Path, layers: tuple[int, ...] | None) -> tuple[str, ...]:
    if layers is None:
        return ()
    down = ffn_down_projections(xml)
    if any(not 0 <= i < len(down) for i in layers):
        raise UserError(f"the model has {len(down)} FFN layers (0-{len(down) - 1}); the recipe names {layers}")
    return tuple(down if not layers else [down[i] for i in layers])


def run(export: Path, split: pd.DataFrame, recipes: list[str], timing_texts: int, passes: int, threads: int):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(export)
    xml = export / MODEL_XML
    train = split[split["split"] == "train"]["text"].tolist()
    test = split[split["split"] == "test"]
    planned = {recipe: parse_recipe(recipe) for recipe in recipes}   # every recipe checked before the slow part
    planned = {recipe: (texts, layers, kept_fp32(xml, layers)) for recipe, (texts, layers) in planned.items()}
    variants = {"fp32": (None, None, xml)}
    with tempfile.TemporaryDirectory(prefix="ov-int8-study-") as tmp:
        for recipe, (texts, layers, keep) in planned.items():
            started = time.perf_counter()
            path = quantize_ir(xml, tokenizer, train[:texts], Path(tmp) / f"{len(variants)}.xml", keep)
            print(f"{recipe}: quantised in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            variants[recipe] = (texts, layers, path)
        compiled = {name: compile_model(path, "f32", threads) for name, (_, _, path) in variants.items()}
        requests = {name: model.create_infer_request() for name, model in compiled.items()}
        inputs = {i.get_any_name() for i in compiled["fp32"].inputs}
        feeds = [{k: v.astype(np.int64) for k, v in tokenizer([t], truncation=True, max_length=MAX_LENGTH,
                                                              return_tensors="np").items() if k in inputs}
                 for t in test["text"]]
        labels = {name: np.array([int(np.argmax(r.infer(f)[0])) for f in feeds]) for name, r in requests.items()}
        times = {name: [] for name in requests}
        for _ in range(passes):
            for f in feeds[:timing_texts]:
                for name, r in requests.items():
                    started = time.perf_counter()
                    r.infer(f)
                    times[name].append(time.perf_counter() - started)
    gold = test["label"].to_numpy()
    flags = " ".join(cpu_flags())
    return [{"recipe": name, "calibration_texts": texts or "", "fp32_ffn_down": fp32_scope(layers),
             "test_accuracy": round(float(np.mean(labels[name] == gold)), 4),
             "agreement_with_fp32": round(float(np.mean(labels[name] == labels["fp32"])), 4),
             "batch1_model_ms_median": round(float(np.median(times[name])) * 1000, 2),
             "timed_texts": len(times[name]), "threads": threads, "cpu": cpu_model(), "cpu_flags": flags}
            for name, (texts, layers, _) in variants.items()]


def fp32_scope(layers) -> str:
    return "" if layers is None else "all layers" if not layers else "layers " + ",".join(map(str, layers))


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export", type=Path,
                   help="an openvino (fp32) export directory: artifacts/<run>/export/<model>/openvino")
    p.add_argument("--split", required=True, type=Path, help="the run's data/split.parquet (text, label, split)")
    p.add_argument("--recipe", action="append", required=True, help="TEXTS[:ffn-down[=LAYERS]]; repeat for several")
    add_timing_options(p)
    args = p.parse_args(argv)
    if not (args.export / MODEL_XML).is_file():
        raise UserError(f"{args.export} holds no {MODEL_XML}: give an openvino export directory "
                        "(artifacts/<run>/export/<model>/openvino, written by make bench)")
    rows = run(args.export, pd.read_parquet(args.split), args.recipe, args.timing_texts, args.passes, args.threads)
    write_rows(rows, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
