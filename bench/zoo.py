"""Every model of a profile's run as a Predictor: the native ones, the exported variants, the GPU variants.

This is the loading half of bench (serve and the benchmark use it); exporting and validating is bench/export.py.
"""
from __future__ import annotations

import torch

from distill.catalogue import parse_model_id
from distill.config import available_profiles, load_profile
from distill.errors import UserError
from distill.families import FAMILIES, family_of, native_predictor
from distill.families.predictor import Predictor, TransformerPredictor
from distill.pipeline import Run
from distill.runs import saved_config

__all__ = ["open_run", "teacher_predictor", "native_predictors", "load_variant", "cuda_backends",
           "gpu_skip_reason", "GPU_VARIANTS"]

# GPU variants reuse a CPU export: (source backend, options)
GPU_VARIANTS = {
    "torch-cuda": ("torch", {}),
    "torch-cuda-fp16": ("torch", {"fp16": True}),
    "torchscript-cuda": ("torchscript", {}),
    "onnx-cuda": ("ort-opt", {"provider": "CUDAExecutionProvider"}),
}


def open_run(profile: str, artifacts="artifacts", reports="reports") -> Run:
    """The Run named `profile` (a profile's own run, or one named after its data) with the configuration it was made
    with (overrides included), saved in run.json; configs/<profile>.toml when a profile's run has not started yet."""
    cfg = saved_config(artifacts, profile)
    if cfg is None and profile not in available_profiles():
        raise UserError(f"no run named {profile!r} in {artifacts}/ and no such profile; make it first with "
                        f"`mbtb distill --name {profile} --data ...`, or choose one of "
                        f"{', '.join(available_profiles())}")
    return Run(profile, cfg or load_profile(profile), artifacts, reports, progress=False, log=lambda *_: None)


def teacher_predictor(run: Run, device: str = "cpu") -> TransformerPredictor:
    from distill.teacher import load_pretrained
    tokenizer, model = load_pretrained(str(run.teacher_dir()))
    model.eval().to(device)
    return TransformerPredictor("teacher", "torch" if device == "cpu" else "torch-cuda", run.labels(), "teacher",
                                tokenizer=tokenizer, module=model, max_length=run.cfg["teacher"]["max_length"],
                                device=device)


def native_predictors(run: Run) -> list[Predictor]:
    """Every model of `run.models()` as it was trained: the teacher in PyTorch eager, students in their framework."""
    labels = run.labels()
    return [teacher_predictor(run) if est is None else native_predictor(model_id, est, labels=labels,
                                                                        kind=parse_model_id(model_id).kind)
            for model_id, est in run.models().items()]


def loader_context(run: Run, model_id: str, estimator, backend: str, device: str = "cpu") -> dict:
    max_length = getattr(estimator, "max_length", None) or run.cfg["teacher"]["max_length"]
    return {"source": estimator, "max_length": max_length, "device": device,
            "meta": {"model": model_id, "backend": backend, "labels": run.labels(),
                     "kind": parse_model_id(model_id).kind}}


def load_variant(run: Run, model_id: str, backend: str, models: dict | None = None) -> Predictor:
    """A Predictor for one (model, backend) of `run`; exported variants must have been exported."""
    models = models if models is not None else run.models()
    estimator = models[model_id]
    family = family_of(estimator)
    if backend in GPU_VARIANTS:
        return _load_gpu_variant(run, model_id, backend)
    if backend == family.native_backend:
        if model_id == "teacher":
            return teacher_predictor(run)
        return native_predictor(model_id, estimator, labels=run.labels(), kind=parse_model_id(model_id).kind)
    if backend not in family.backends:
        raise UserError(f"{model_id} ({family.name}) has no backend {backend!r}; it has "
                        f"{', '.join([family.native_backend, *family.backends])}")
    if run.key(f"export/{model_id}/{backend}") is None:
        raise UserError(f"{model_id}/{backend} has not been exported; run `python -m bench.export "
                        f"--profile {run.profile}`")
    return family.backends[backend].load(run.verified_dir(f"export/{model_id}/{backend}"),
                                         loader_context(run, model_id, estimator, backend))


def _load_gpu_variant(run: Run, model_id: str, backend: str) -> Predictor:
    base, options = GPU_VARIANTS[backend]
    if base == "torch":
        pred = teacher_predictor(run, device="cuda")
        if options.get("fp16"):
            pred.module = pred.module.half()
        pred.backend = backend
        return pred
    ctx = {**loader_context(run, model_id, None, backend, device="cuda"), **options}
    return FAMILIES["transformer"].backends[base].load(run.dir / "export" / model_id / base, ctx)


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
