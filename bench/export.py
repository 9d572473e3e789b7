"""`python -m bench.export`: export every model of a run to every backend it supports, validate, score.

Each variant is a cached stage `artifacts/<profile>/export/<model>/<backend>/` holding the exported files and, in its
stage.json, the validation against the source model (max |p - p_source| and label agreement on test sentences), the
variant's own test accuracy (int8 can lose some), its size on disk and parameter count. A failed export is logged and
recorded in the manifest; the other variants go on.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distill import data as datasets
from distill.atomic import write_json
from distill.errors import UserError
from distill.metrics import count_params, evaluate
from distill.pipeline import Run, logits_of
from distill.students import AveragingEnsemble, BiLSTMClassifier

from . import zoo
from .exporters import BACKENDS, EXPORTERS, LOADERS, NATIVE_BACKEND
from .predictor import softmax

EXPORT_VERSION = 1
VALIDATION_SENTENCES = 64
# GPU variants reuse a CPU export: (source backend, device, options)
GPU_VARIANTS = {
    "torch-cuda": ("torch", {}),
    "torch-cuda-fp16": ("torch", {"fp16": True}),
    "torchscript-cuda": ("torchscript", {}),
    "onnx-cuda": ("ort-opt", {"provider": "CUDAExecutionProvider"}),
}


def family_of(estimator) -> str:
    if estimator is None:
        return "transformer"
    if isinstance(estimator, AveragingEnsemble):
        return "ensemble"
    if isinstance(estimator, BiLSTMClassifier):
        return "bilstm"
    if hasattr(estimator, "vectorizer_"):
        return "sklearn"
    return "other"


def models_of(run: Run) -> dict:
    """model id -> fitted estimator (None for the teacher), ensembles included."""
    students = {model_id: run.student(model_id) for model_id in run.student_names()}
    models = {"teacher": None, **students}
    for mode in run.cfg["students"]["modes"]:
        members = [(f"{n}-{mode}", students[f"{n}-{mode}"]) for n in run.cfg["students"].get("ensemble", [])
                   if f"{n}-{mode}" in students]
        if len(members) >= 2:
            models[f"ensemble-{mode}"] = AveragingEnsemble.from_fitted(members)
    return models


def source_key(run: Run, model_id: str) -> str | None:
    if model_id == "teacher":
        return run.key("teacher")
    if model_id.startswith("ensemble-"):
        mode = model_id.split("-", 1)[1]
        return "+".join(str(run.key(f"students/{n}-{mode}")) for n in run.cfg["students"].get("ensemble", []))
    return run.key(f"students/{model_id}")


def cuda_backends() -> dict:
    """GPU variants runnable here, or {} with the reason printed once."""
    if not torch.cuda.is_available():
        return {}
    import onnxruntime as ort
    out = dict(GPU_VARIANTS)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        out.pop("onnx-cuda")
    return out


def gpu_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False): GPU variants skipped"
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): onnx-cuda skipped"
    return None


def load_variant(run: Run, model_id: str, backend: str, models: dict | None = None):
    """A Predictor for one (model, backend) of `run`; exported variants must have been exported."""
    models = models if models is not None else models_of(run)
    estimator = models[model_id]
    family = family_of(estimator)
    labels = run.labels()
    meta = {"model": model_id, "backend": backend, "labels": labels, "kind": zoo.kind_of(model_id)}
    if backend in GPU_VARIANTS:
        return _load_gpu_variant(run, model_id, backend, meta)
    if backend == NATIVE_BACKEND.get(family):
        return zoo.teacher_predictor(run) if model_id == "teacher" else zoo.student_predictor(model_id, estimator,
                                                                                              labels)
    directory = run.dir / "export" / model_id / backend
    if run.key(f"export/{model_id}/{backend}") is None:
        raise UserError(f"{model_id}/{backend} has not been exported; run `python -m bench.export "
                        f"--profile {run.profile}`")
    ctx = {"source": estimator, "max_length": run.cfg["teacher"]["max_length"], "device": "cpu", "meta": meta}
    return LOADERS[(family, backend)](directory, ctx)


def _load_gpu_variant(run, model_id, backend, meta):
    base, options = GPU_VARIANTS[backend]
    if base == "torch":
        pred = zoo.teacher_predictor(run, device="cuda")
        if options.get("fp16"):
            pred.module = pred.module.half()
        pred.backend = backend
        return pred
    ctx = {"source": None, "max_length": run.cfg["teacher"]["max_length"], "device": "cuda", "meta": meta,
           **options}
    return LOADERS[("transformer", base)](run.dir / "export" / model_id / base, ctx)


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "stage.json")


def native_size(run: Run, model_id: str) -> int:
    if model_id == "teacher":
        return dir_size(run.teacher_dir())
    if model_id.startswith("ensemble-"):
        mode = model_id.split("-", 1)[1]
        return sum(dir_size(run.dir / "students" / f"{n}-{mode}" / "model.joblib")
                   for n in run.cfg["students"].get("ensemble", []))
    return dir_size(run.dir / "students" / model_id / "model.joblib")


def score(pred, texts, gold, teacher_probs, reference=None, eval_cfg=None) -> dict:
    """Test metrics of one variant, plus its agreement with the source model on the first sentences."""
    eval_cfg = eval_cfg or {"bootstrap": 1000, "seed": 13}
    probs = pred.predict_proba(texts)
    out = evaluate(gold, probs, teacher_probs.argmax(1), eval_cfg["bootstrap"], eval_cfg["seed"])
    cos = (probs * teacher_probs).sum(1) / (np.linalg.norm(probs, axis=1) * np.linalg.norm(teacher_probs, axis=1))
    out["cosine_to_teacher"] = float(cos.mean())
    if reference is not None:
        n = min(VALIDATION_SENTENCES, len(texts))
        out["max_abs_diff"] = float(np.abs(probs[:n] - reference[:n]).max())
        out["label_agreement_with_source"] = float(np.mean(probs[:n].argmax(1) == reference[:n].argmax(1)))
    return out


def export_all(run: Run, models_filter=None, log=print, progress=True, backends_filter=None) -> list[dict]:
    """Export, validate and score every variant; write artifacts/<profile>/export/manifest.json."""
    split = run.split()
    texts, gold = datasets.texts_labels(split, "test")
    teacher_probs = softmax(logits_of(run.soft_labels(), "test").astype(np.float64))
    sample = datasets.texts_labels(split, "dev")[0][:16]
    models = models_of(run)
    entries = []
    plan = []
    for model_id, estimator in models.items():
        if models_filter and model_id not in models_filter:
            continue
        family = family_of(estimator)
        plan.append((model_id, estimator, family, NATIVE_BACKEND.get(family, "native")))
        plan += [(model_id, estimator, family, b) for b in BACKENDS.get(family, [])]
        if model_id == "teacher":
            plan += [(model_id, estimator, family, b) for b in cuda_backends()]
    if backends_filter:
        plan = [item for item in plan if item[3] in backends_filter or item[3] == item[2] or
                item[3] == NATIVE_BACKEND.get(item[2], "native")]
    reason = gpu_skip_reason()
    if reason:
        log(f"  note: {reason}")
    reference = {}
    for model_id, estimator, family, backend in tqdm(plan, desc="export", disable=not progress):
        entry = {"model": model_id, "backend": backend, "family": family, "kind": zoo.kind_of(model_id)}
        params = run_params(run, model_id, estimator)
        inputs = {"source": source_key(run, model_id), "backend": backend, "version": EXPORT_VERSION,
                  "test": run.key("data")}
        native = backend == NATIVE_BACKEND.get(family, "native")

        def build(tmp, model_id=model_id, estimator=estimator, family=family, backend=backend, native=native):
            if not native and backend not in GPU_VARIANTS:
                source = run.teacher_dir() if model_id == "teacher" else estimator
                EXPORTERS[(family, backend)](source, tmp, sample)
                # Validate from the exported files, not from objects still in memory.
                ctx = {"source": estimator, "max_length": run.cfg["teacher"]["max_length"], "device": "cpu",
                       "meta": {"model": model_id, "backend": backend, "labels": run.labels(),
                                "kind": zoo.kind_of(model_id)}}
                pred = LOADERS[(family, backend)](tmp, ctx)
                size = dir_size(tmp)
            else:
                pred = load_variant(run, model_id, backend, models)
                size = native_size(run, model_id) if backend not in GPU_VARIANTS else None
            metrics = score(pred, texts, gold, teacher_probs, reference.get(model_id), run.cfg["eval"])
            return {**metrics, "size_bytes": size, "params": params}

        try:
            _, info = run.stage(f"export/{model_id}/{backend}", inputs, build)
            entry.update(status="ok", **{k: v for k, v in info.items() if k != "seconds"})
            if native:
                reference[model_id] = load_variant(run, model_id, backend, models).predict_proba(
                    texts[:VALIDATION_SENTENCES])
        except Exception as exc:  # one broken exporter must not stop the others
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            log(f"  export {model_id}/{backend} FAILED: {message}")
            entry.update(status="failed", error=message, traceback=traceback.format_exc(limit=3))
        entries.append(entry)
    manifest = run.dir / "export" / "manifest.json"
    if (models_filter or backends_filter) and manifest.exists():  # a partial export keeps the other entries
        done = {(e["model"], e["backend"]) for e in entries}
        entries = [e for e in read_manifest(manifest)["variants"] if (e["model"], e["backend"]) not in done] + entries
    content = {"profile": run.profile, "variants": entries, "gpu_skip_reason": reason}
    if not manifest.exists() or read_manifest(manifest) != json.loads(json.dumps(content, default=str)):
        write_json(manifest, content)  # unchanged content keeps its mtime, so `make` sees nothing new
    return entries


def read_manifest(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run `python -m bench.export` for that profile first") from None
    except ValueError:
        raise UserError(f"{path} is unreadable; delete it and run `python -m bench.export` again") from None


def run_params(run: Run, model_id: str, estimator) -> int:
    if model_id == "teacher":
        return int(run._stage_meta("teacher")["info"]["params"])
    return count_params(estimator)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.export", description="Export every model of a profile's run "
                                "(ONNX, TorchScript, int8), validate each export against its source model and score "
                                "its test accuracy. Results: artifacts/<profile>/export/manifest.json.")
    p.add_argument("--profile", default="default")
    p.add_argument("--models", help="comma-separated model ids (default: all)")
    p.add_argument("--backends", help="comma-separated exported backends (default: all; native ones always)")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        run = zoo.open_run(args.profile, args.artifacts)
        entries = export_all(run, args.models.split(",") if args.models else None, progress=not args.quiet,
                             backends_filter=args.backends.split(",") if args.backends else None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tabulate import tabulate
    rows = [{"model": e["model"], "backend": e["backend"], "status": e["status"],
             "accuracy": e.get("accuracy"), "max_abs_diff": e.get("max_abs_diff"),
             "size_MB": (e.get("size_bytes") or 0) / 1e6} for e in entries]
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".4f"))
    failed = [e for e in entries if e["status"] != "ok"]
    print(f"\n{len(entries) - len(failed)} variants ready, {len(failed)} failed; "
          f"manifest: {run.dir / 'export' / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
