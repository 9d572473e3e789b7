"""`python -m bench.export`: export every model of a run to every backend it supports, validate, score.

Each variant is a cached stage `artifacts/<profile>/export/<model>/<backend>/` holding the exported files and, in its
stage.json, the validation against the source model (max |p - p_source| and label agreement on test sentences), the
variant's own test accuracy (int8 can lose some), its size on disk and parameter count. A failed export is logged and
recorded in the manifest; the other variants go on.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from distill import data as datasets
from distill import runs
from distill.batching import length_batches
from distill.catalogue import logits_of, parse_model_id
from distill.errors import one_line_errors
from distill.families import family_of
from distill.families.manifest import Manifest, has_manifest, manifest_path, read_manifest, write_manifest
from distill.families.registry import BROKEN, LOSSY, drift_verdict
from distill.int8_onnx import CALIBRATION_TEXTS
from distill.metrics import count_params, evaluate
from distill.pipeline import Run
from distill.students.soft import softmax
from distill.teacher_onnx import quiet_exporters

from . import zoo
from .zoo import GPU_VARIANTS, cuda_backends, gpu_skip_reason, load_variant, loader_context

EXPORT_VERSION = 2   # 2: validation against the family's tolerance
VALIDATION_SENTENCES = 64
SCORING_BATCH = 64


class ExportDrift(Exception):
    """An export whose outputs moved further from its source than its backend's tolerance."""


def source_key(run: Run, model_id: str) -> str | None:
    if model_id == "teacher":
        return run.key("teacher")
    members = run.ensemble_members(model_id)
    if members:
        return "+".join(str(run.key(f"students/{m}")) for m in members)
    return run.key(f"students/{model_id}")


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "stage.json")


def native_size(run: Run, model_id: str) -> int:
    if model_id == "teacher":
        return dir_size(run.teacher_dir())
    members = run.ensemble_members(model_id)
    if members:
        return sum(dir_size(run.dir / "students" / m / "model.joblib") for m in members)
    return dir_size(run.dir / "students" / model_id / "model.joblib")


def predict_by_length(pred, texts: list[str], batch_size: int = SCORING_BATCH) -> np.ndarray:
    """`pred.predict_proba(texts)` in batches of similar length (in input order): one batch of the whole test split
    would pad every sentence to the longest, which costs a transformer several times the work."""
    out = None
    for rows in length_batches([len(t) for t in texts], batch_size):
        probs = np.asarray(pred.predict_proba([texts[i] for i in rows]), dtype=np.float64)
        if out is None:
            out = np.zeros((len(texts), probs.shape[1]))
        out[rows] = probs
    return out


def score(pred, texts, gold, teacher_probs, reference=None, eval_cfg=None, metric=None) -> dict:
    """Test metrics of one variant (the run's `metric` among them), plus its agreement with the source model on the
    first sentences."""
    eval_cfg = eval_cfg or {"bootstrap": 1000, "seed": 13}
    probs = predict_by_length(pred, texts)
    out = evaluate(gold, probs, teacher_probs.argmax(1), eval_cfg["bootstrap"], eval_cfg["seed"], metric)
    cos = (probs * teacher_probs).sum(1) / (np.linalg.norm(probs, axis=1) * np.linalg.norm(teacher_probs, axis=1))
    out["cosine_to_teacher"] = float(cos.mean())
    if reference is not None:
        n = min(VALIDATION_SENTENCES, len(texts))
        out["max_abs_diff"] = float(np.abs(probs[:n] - reference[:n]).max())
        out["label_agreement_with_source"] = float(np.mean(probs[:n].argmax(1) == reference[:n].argmax(1)))
    return out


def check_drift(metrics: dict, tolerance: float, name: str, lossy: bool = False) -> None:
    """Fail an export its backend's drift rule (distill/families/registry.py) finds broken; a lossy one (int8) that
    still agrees on at least LOSSY_MIN_AGREEMENT of the labels is kept with a `drift_note`, its accuracy cost
    scored."""
    drift = metrics.get("max_abs_diff")
    if drift is None:
        return
    agreement = metrics.get("label_agreement_with_source", 0.0)
    verdict = drift_verdict(drift, agreement, tolerance, lossy)
    if verdict == LOSSY:
        metrics["drift_note"] = (f"{name} moves probabilities by up to {drift:.3g} (past {tolerance:g}) and agrees "
                                 f"with its source on {agreement:.0%} of {VALIDATION_SENTENCES} test sentences: "
                                 "quantisation loss, kept and scored")
    if verdict == BROKEN:
        raise ExportDrift(f"validation: {name} moves probabilities by up to {drift:.3g} from its source on "
                          f"{VALIDATION_SENTENCES} test sentences, past its tolerance {tolerance:g}")


def export_plan(models: dict, backends_filter=None, skip=()) -> list[tuple[str, object, str]]:
    """(model id, estimator, backend) for every variant: each model's native backend first (the reference its
    exports are validated against), then its family's exported backends (but those named `family/backend` in
    `skip`), then GPU variants of the teacher."""
    plan = []
    for model_id, estimator in models.items():
        family = family_of(estimator)
        plan.append((model_id, estimator, family.native_backend))
        plan += [(model_id, estimator, b) for b in family.backends
                 if (not backends_filter or b in backends_filter) and f"{family.name}/{b}" not in skip]
        if model_id == "teacher":
            plan += [(model_id, estimator, b) for b in cuda_backends()
                     if not backends_filter or b in backends_filter]
    return plan


def export_all(run: Run, models_filter=None, log=print, progress=True, backends_filter=None) -> list[dict]:
    """Export, validate and score every variant; write artifacts/<profile>/export/manifest.json. A variant whose
    export fails, or drifts past its backend's tolerance, is recorded as failed and left out of bench and report."""
    split = run.split()
    texts, gold = datasets.texts_labels(split, "test")
    teacher_probs = softmax(logits_of(run.soft_labels(), "test").astype(np.float64))
    # Exporters trace on the first few; int8 calibrates on them: training text, never the text it is scored on.
    n_calibration = run.cfg["export"]["calibration_texts"]
    sample = datasets.texts_labels(split, "train")[0][:n_calibration]
    models = {m: e for m, e in run.models().items() if not models_filter or m in models_filter}
    skip = run.cfg.get("export", {}).get("skip", [])
    plan = export_plan(models, backends_filter, skip)
    if skip:
        log(f"  export: skipping {', '.join(skip)} (export.skip)")
    reason = gpu_skip_reason()
    if reason:
        log(f"  note: {reason}")
    entries, reference = [], {}
    for model_id, estimator, backend in tqdm(plan, desc="export", disable=not progress):
        family = family_of(estimator)
        entry = {"model": model_id, "backend": backend, "family": family.name, "kind": parse_model_id(model_id).kind}
        native = backend == family.native_backend
        exported = family.backends.get(backend) if backend not in GPU_VARIANTS else None
        inputs = {"source": source_key(run, model_id), "backend": backend, "version": EXPORT_VERSION,
                  "test": run.key("data"), "tolerance": exported.tolerance if exported else None,
                  "eval": run.cfg["eval"]}   # the metric and bootstrap its scores are computed with
        if exported is not None and exported.version > 1:   # version 1 keeps the keys exports had before versions
            inputs["backend_version"] = exported.version
        recalibrated = calibration_changes(exported, n_calibration)
        if recalibrated:
            inputs["calibration_texts"] = n_calibration

        def build(tmp, model_id=model_id, estimator=estimator, backend=backend, native=native, exported=exported,
                  recalibrated=recalibrated):
            if exported is not None:
                labelled_with = run.labeller_export(backend) if model_id == "teacher" and not recalibrated else None
                if labelled_with is not None:  # the labeller made this very export already
                    shutil.copytree(labelled_with, tmp, dirs_exist_ok=True)
                else:
                    with quiet_exporters():
                        exported.export(run.teacher_dir() if model_id == "teacher" else estimator, tmp, sample)
                # Validate from the exported files, not from objects still in memory.
                pred = exported.load(tmp, loader_context(run, model_id, estimator, backend))
                size = dir_size(tmp)
            else:
                pred = load_variant(run, model_id, backend, models)
                size = native_size(run, model_id) if native else None
            metrics = score(pred, texts, gold, teacher_probs, reference.get(model_id), run.cfg["eval"], run.metric())
            if exported is not None:
                check_drift(metrics, exported.tolerance, f"{model_id}/{backend}", exported.lossy)
                metrics["tolerance"] = exported.tolerance
            return {**metrics, "size_bytes": size, "params": run_params(run, model_id, estimator)}

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
    if (models_filter or backends_filter) and has_manifest(run.dir):  # a partial export keeps the other entries
        done = {(e["model"], e["backend"]) for e in entries}
        entries = [v.row() for v in read_manifest(run.dir).variants if (v.model, v.backend) not in done] + entries
    write_manifest(run.dir, Manifest(profile=run.profile, variants=entries, gpu_skip_reason=reason))
    return entries


def calibration_changes(exported, n_calibration: int) -> bool:
    """Whether `n_calibration` texts give this backend another export than the CALIBRATION_TEXTS the labeller and
    every earlier export calibrated on (so it joins the key, which otherwise stays what it was)."""
    if exported is None or not exported.lossy or n_calibration == CALIBRATION_TEXTS:
        return False
    return exported.calibrated or n_calibration < CALIBRATION_TEXTS


def run_params(run: Run, model_id: str, estimator) -> int:
    if model_id == "teacher":
        return int(run.stage_info("teacher")["params"])
    return count_params(estimator)


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mbtb export", description="Export every model of a run (ONNX, TorchScript, "
                                "int8), validate each export against its source model and score it on the test "
                                "split. Results: artifacts/<run>/export/manifest.json.")
    runs.add_arguments(p)
    p.add_argument("--models", help="comma-separated model ids (default: all)")
    p.add_argument("--backends", help="comma-separated exported backends (default: all; native ones always)")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    run = zoo.open_run(runs.run_name(args.profile, args.data, args.name), args.artifacts)
    entries = export_all(run, args.models.split(",") if args.models else None, progress=not args.quiet,
                         backends_filter=args.backends.split(",") if args.backends else None)
    from tabulate import tabulate
    rows = [{"model": e["model"], "backend": e["backend"], "status": e["status"],
             "accuracy": e.get("accuracy"), "max_abs_diff": e.get("max_abs_diff"),
             "size_MB": (e.get("size_bytes") or 0) / 1e6} for e in entries]
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".4f"))
    failed = [e for e in entries if e["status"] != "ok"]
    print(f"\n{len(entries) - len(failed)} variants ready, {len(failed)} failed; "
          f"manifest: {manifest_path(run.dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
