"""Which inference engine is fastest for a run's teacher here: PyTorch eager, ONNX Runtime (fp32 graph-optimised and
dynamic int8) and the optional engines (OpenVINO fp32 / bf16 / int8, CTranslate2), each exported through the one
registry of exports, timed in one process, interleaved, at batch 1 and 32 over the same sentences; the drift and
accuracy of each on the run's dev split (docs/engines.md).

    .venv/bin/python scripts/engine_study.py artifacts/full [--sentences 50] [--rounds 10] [--out engines.json]

The exports go to --workdir (default: a temporary directory; a directory given is reused on the next call). Every
round times each batch in every engine, in a fresh random order, so a change in the machine's load falls on all of
them alike: compare the ratios, which is what the tables show beside the medians.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tabulate import tabulate

from bench.export import predict_by_length
from distill import data as datasets
from distill.families import FAMILIES
from distill.families.predictor import TransformerPredictor
from distill.families.registry import TEACHER_FAMILY
from distill.teacher import load_pretrained, predict_logits
from distill.teacher_onnx import quiet_exporters

OPTIONAL_ENGINES = ("distill.families.openvino", "distill.families.ctranslate2")   # registered when importable
DEFAULT_BACKENDS = "torch,ort-opt,onnx-int8,openvino,openvino-bf16,openvino-int8,ctranslate2,ctranslate2-int8"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def register_optional_engines() -> list[str]:
    """Import each optional engine's module (it registers its backends); the ones missing, with why."""
    missing = []
    for module in OPTIONAL_ENGINES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{module.rsplit('.', 1)[1]} ({exc.name or exc} not importable)")
    return missing


def run_settings(run_dir: Path) -> tuple[Path, pd.DataFrame, int, list[str]]:
    """The run's teacher directory, data split, teacher max_length and labels."""
    config = json.loads((run_dir / "run.json").read_text())["config"]
    labels = json.loads((run_dir / "data" / "labels.json").read_text())
    return (run_dir / "teacher" / "model", pd.read_parquet(run_dir / "data" / "split.parquet"),
            config["teacher"]["max_length"], labels)


def load_engines(teacher_dir, backends, workdir: Path, calibration, max_length, labels, log) -> tuple[dict, list]:
    """Each backend's Predictor: PyTorch eager from the teacher's directory, the others exported (once) by their
    registered exporter and loaded back by their registered loader; and the backends that failed to export, why."""
    family = FAMILIES[TEACHER_FAMILY]
    meta = {"model": "teacher", "labels": labels, "kind": "teacher"}
    tokenizer, model = load_pretrained(str(teacher_dir))
    engines = {"torch": TransformerPredictor(tokenizer=tokenizer, module=model.eval(), max_length=max_length,
                                             backend="torch", **meta)}
    failed = []
    for name in [b for b in backends if b != "torch"]:
        directory = workdir / name
        if not (directory / ".exported").exists():
            log(f"exporting {name} ...")
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            started = time.perf_counter()
            try:
                with quiet_exporters():
                    family.backends[name].export(teacher_dir, directory, calibration)
            except Exception as exc:   # one engine that cannot take this model must not stop the others
                failed.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
                continue
            (directory / ".exported").write_text(f"{time.perf_counter() - started:.1f}")
        ctx = {"source": None, "max_length": max_length, "device": "cpu", "meta": {**meta, "backend": name}}
        engines[name] = family.backends[name].load(directory, ctx)
    return engines, failed


def quality(engines: dict, texts, gold) -> list[dict]:
    """Accuracy on `texts` and drift from PyTorch eager: max and mean |dp|, label agreement, the drift rule's
    verdict."""
    reference = predict_by_length(engines["torch"], texts)
    family, rows = FAMILIES[TEACHER_FAMILY], []
    for name, pred in engines.items():
        probs = predict_by_length(pred, texts)
        diff = np.abs(probs - reference)
        agreement = float(np.mean(probs.argmax(1) == reference.argmax(1)))
        backend = family.backends.get(name)
        rows.append({"backend": name, "accuracy": float(np.mean(probs.argmax(1) == gold)),
                     "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "agreement": agreement,
                     "verdict": backend.verdict(float(diff.max()), agreement) if backend else "reference"})
    return rows


def batches_of(texts: list[str], size: int) -> list[list[str]]:
    """Consecutive batches of `size` covering `texts` once (the last one wrapping round to the start)."""
    doubled = texts + texts
    return [doubled[i:i + size] for i in range(0, len(texts), size)]


def time_engines(engines: dict, texts: list[str], batch_sizes, rounds: int, seed: int = 0) -> list[dict]:
    """Median end-to-end and model-only milliseconds per batch for each engine and batch size, interleaved."""
    rng, rows = random.Random(seed), []
    for size in batch_sizes:
        batches = batches_of(texts, size)
        for pred in engines.values():   # warm-up: first calls compile kernels for new shapes
            for batch in batches:
                pred.predict_proba(batch)
        e2e = {name: [] for name in engines}
        model = {name: [] for name in engines}
        for _ in range(rounds):
            for batch in batches:
                for name in rng.sample(list(engines), len(engines)):
                    started = time.perf_counter()
                    prepared = engines[name].prepare(batch)
                    ran = time.perf_counter()
                    engines[name].run(prepared)
                    done = time.perf_counter()
                    e2e[name].append(done - started)
                    model[name].append(done - ran)
        rows += [{"backend": name, "batch_size": size, "e2e_ms": 1e3 * float(np.median(e2e[name])),
                  "model_ms": 1e3 * float(np.median(model[name])), "calls": len(e2e[name])} for name in engines]
    return rows


RATIOS = {"x_torch": "torch", "x_ort_opt": "ort-opt", "x_onnx_int8": "onnx-int8"}


def with_ratios(timings: list[dict]) -> list[dict]:
    """Each row with its speedup over PyTorch eager, ONNX Runtime fp32 and ONNX Runtime int8 at the same batch
    size (how many times faster; below 1: slower)."""
    by = {(r["backend"], r["batch_size"]): r["e2e_ms"] for r in timings}
    return [{**r, **{column: by.get((base, r["batch_size"]), np.nan) / r["e2e_ms"] for column, base in RATIOS.items()}}
            for r in timings]


def print_result(result: dict) -> None:
    print(f"machine: {result['machine']}\nload average before/after timing: {result['load_average_before_after']}")
    for table, digits in (("timings", ".3g"), ("quality", ".4g"), ("labelling", ".4g")):
        print(tabulate(result[table], headers="keys", tablefmt="github", floatfmt=digits))
    if result["skipped"]:
        print("skipped:", ", ".join(result["skipped"]))


def labelling(teacher_dir, engines: dict, workdir: Path, texts, max_length, batch_size, rounds) -> list[dict]:
    """Texts/s of each backend's labeller reader (its `logits`, as distill/labelling.py runs it: length-sorted
    batches) on `texts`, against PyTorch's `predict_logits`, interleaved; and its mean |dlogit| from PyTorch's, the
    number labelling.tolerance bounds."""
    family = FAMILIES[TEACHER_FAMILY]
    tokenizer, model = load_pretrained(str(teacher_dir))
    readers = {"torch": lambda t: predict_logits(model.eval(), tokenizer, t, max_length, batch_size, progress=False)}
    readers.update({name: partial(family.backends[name].logits(workdir / name), max_length=max_length,
                                  batch_size=batch_size)
                    for name in engines if name != "torch" and family.backends[name].logits is not None})
    logits, seconds = {}, {name: [] for name in readers}
    for _ in range(rounds):
        for name in random.sample(list(readers), len(readers)):
            started = time.perf_counter()
            logits[name] = readers[name](texts)
            seconds[name].append(time.perf_counter() - started)
    return [{"backend": name, "batch_size": batch_size, "texts": len(texts),
             "texts_per_s": len(texts) / float(np.median(seconds[name])),
             "mean_abs_dlogit": float(np.abs(logits[name] - logits["torch"]).mean())} for name in readers]


def machine() -> dict:
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        line = next((x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")), "")
        flags = set(line.split(":", 1)[-1].split())
    versions = {}
    for package in ("torch", "onnxruntime", "openvino", "nncf", "optimum.intel", "ctranslate2", "transformers"):
        try:
            versions[package] = importlib.import_module(package).__version__
        except (ImportError, AttributeError):
            pass
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "flags": [f for f in CPU_FLAGS if f in flags],
            "load_average": os.getloadavg(), "versions": versions}


def study(args, log=print) -> dict:
    missing = register_optional_engines()
    teacher_dir, split, max_length, labels = run_settings(Path(args.run))
    available = {"torch", *FAMILIES[TEACHER_FAMILY].backends}
    backends = [b for b in args.backends.split(",") if b in available]
    dev_texts, dev_gold = datasets.texts_labels(split, "dev")
    calibration = datasets.texts_labels(split, "train")[0][:args.calibration]
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        engines, failed = load_engines(teacher_dir, backends, workdir, calibration, max_length, labels, log)
        exported_s = {b: float((workdir / b / ".exported").read_text()) for b in engines if b != "torch"}
        started_load = os.getloadavg()
        timings = with_ratios(time_engines(engines, dev_texts[:args.sentences], args.batch_sizes, args.rounds))
        ended_load = os.getloadavg()
        labelled = labelling(teacher_dir, engines, workdir, dev_texts[:args.label_texts], max_length,
                             args.label_batch, max(1, args.rounds // 4)) if args.label_texts else []
        scored = args.scored or len(dev_texts)
        scores = quality(engines, dev_texts[:scored], dev_gold[:scored])
    return {"run": str(args.run), "teacher": str(teacher_dir), "max_length": max_length,
            "sentences": min(args.sentences, len(dev_texts)), "rounds": args.rounds, "scored_dev_texts": scored,
            "calibration_texts": len(calibration), "skipped": missing + failed, "export_seconds": exported_s,
            "machine": machine(), "load_average_before_after": [started_load, ended_load],
            "timings": timings, "quality": scores, "labelling": labelled}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run's artifacts directory (artifacts/<run>): its teacher, split and max_length")
    p.add_argument("--backends", default=DEFAULT_BACKENDS, help="those not installed are skipped")
    p.add_argument("--sentences", type=int, default=50, help="dev sentences timed")
    p.add_argument("--scored", type=int, default=0, help="dev sentences scored (default: all)")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    p.add_argument("--rounds", type=int, default=10, help="passes over the sentences, each in a fresh order")
    p.add_argument("--label-texts", type=int, default=256, help="dev texts each labeller reader labels (0: none)")
    p.add_argument("--label-batch", type=int, default=128, help="the labeller's batch size (labelling.batch_size)")
    p.add_argument("--calibration", type=int, default=16, help="training texts the int8 exports calibrate on "
                   "(bench/export.py gives 16 dev texts)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workdir", help="keep the exports here and reuse them")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = study(args)
    print_result(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
