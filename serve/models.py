"""Load the models of a run once, at start-up, one by one: a model that fails is reported as missing with its
reason and the others still serve."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from bench.results import e2e_medians_ms, read_bench
from bench.zoo import load_variant, open_run
from distill.errors import UserError
from distill.families import family_of
from distill.families.manifest import Manifest, has_manifest, read_manifest
from distill.families.predictor import EnsemblePredictor, Predictor
from distill.pipeline import Run


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class Missing:
    name: str
    reason: str


@dataclass
class Loaded:
    profile: str
    predictors: list[Predictor] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)


DEFAULT_BACKENDS = ("onnx-int8",)
# Teacher exports that give PyTorch's probabilities (validated within their tolerance), fastest first.
LOSSLESS_REFERENCES = ("ort-opt", "onnx")
REFERENCES = ("auto", "torch", *LOSSLESS_REFERENCES)


def reference_backend(manifest: Manifest | None, requested: str = "auto") -> str:
    """The backend of the teacher every other model is compared with: `requested`, or for "auto" the first of
    LOSSLESS_REFERENCES that the run's export manifest holds validated within its tolerance (the teacher's own
    probabilities, 1.4-1.7x faster than PyTorch eager on CPU), else PyTorch eager."""
    if requested != "auto":
        return requested
    lossless = {v.backend for v in (manifest.ok() if manifest else []) if v.model == "teacher" and v.lossless}
    return next((backend for backend in LOSSLESS_REFERENCES if backend in lossless), "torch")


def serving_backends(manifest: Manifest | None, latencies_ms: dict[tuple[str, str], float]) -> dict[str, str]:
    """Student id -> its fastest validated backend at batch 1, end to end, by `latencies_ms` (the run's last
    benchmark); {} before `make bench`. GPU variants are left out: a server on this machine serves on its CPU."""
    timed: dict[str, list[tuple[float, str]]] = {}
    for v in manifest.ok() if manifest else []:
        if (v.model, v.backend) in latencies_ms and v.model != "teacher" and "cuda" not in v.backend:
            timed.setdefault(v.model, []).append((latencies_ms[(v.model, v.backend)], v.backend))
    return {model: min(rows)[1] for model, rows in timed.items()}


def batch1_latencies_ms(run: Run) -> dict[tuple[str, str], float]:
    """(model, backend) -> its median end-to-end latency at batch 1 in reports/<run>/bench.json; {} without one."""
    path = run.reports / "bench.json"
    return e2e_medians_ms(read_bench(path), batch_size=1) if path.exists() else {}


def model_loaders(run: Run, backends=DEFAULT_BACKENDS, reference: str = "auto"
                  ) -> list[tuple[str, Callable[[], list[Predictor]]]]:
    """What serve loads, in order, as (name, load) pairs; `load()` returns one or more Predictors or raises.

    The teacher first, in its `reference_backend`: it is the reference. Then every model of `run.models()`, one
    loader each so one failure does not hide the rest, each in its serving backend: the fastest validated backend
    at batch 1 in the run's benchmark (reports/<profile>/bench.json), or the native one before `make bench`. Then
    the exported variants of `backends` found in the run's export manifest, which is read once, here.
    """
    manifest = read_manifest(run.dir) if has_manifest(run.dir) else None
    serving = {**serving_backends(manifest, batch1_latencies_ms(run)),
               "teacher": reference_backend(manifest, reference)}
    loaded: dict = {}   # model id -> fitted estimator, filled as loaders succeed; ensembles reuse their members
    served: dict[str, Predictor] = {}   # model id -> the Predictor it is served by

    def load(model_id):
        loaded[model_id] = run.model(model_id, loaded)
        backend = serving.get(model_id) or family_of(loaded[model_id]).native_backend
        served[model_id] = load_variant(run, model_id, backend, loaded)
        members = run.ensemble_members(model_id)
        if members and all(m in served for m in members):
            served[model_id] = ensemble_of_served(served[model_id], [served[m] for m in members])
        return [served[model_id]]

    loaders = [(model_id, partial(load, model_id)) for model_id in run.model_ids()]
    return loaders + exported_loaders(run, manifest, backends, skip=set(serving.items()), loaded=loaded)


def ensemble_of_served(ensemble: EnsemblePredictor, members: list[Predictor]) -> EnsemblePredictor:
    """The ensemble averaging its members as this server serves them: when a member is served in a faster validated
    backend than the one it was trained in, the ensemble uses that one too (backend "serving"), so the engine can
    answer it from its members' answers instead of running them again."""
    if [m.name for m in members] == [m.name for m in ensemble.members]:
        return ensemble
    return dataclasses.replace(ensemble, backend="serving", members=members)


def exported_loaders(run: Run, manifest: Manifest | None, backends, skip=(), loaded=None
                     ) -> list[tuple[str, Callable[[], list[Predictor]]]]:
    """Loaders of the validated variants of `backends` in `manifest`; `loaded` holds estimators already loaded
    (reused)."""
    if not backends or manifest is None:
        return []
    models = loaded if loaded is not None else {}

    def load(model_id, backend):
        if model_id not in models:
            models[model_id] = run.model(model_id, models)
        return [load_variant(run, model_id, backend, models)]

    return [(v.name, partial(load, v.model, v.backend)) for v in manifest.ok()
            if v.backend in backends and (v.model, v.backend) not in skip]


def load_run(run: Run, log=print, n_examples: int = 8, backends=DEFAULT_BACKENDS, reference: str = "auto") -> Loaded:
    """Every model of `run`, warmed up on one test sentence, with a progress line per model."""
    try:
        labels = run.labels()
        examples = pick_examples(run.split(), labels, n_examples)
        loaders = model_loaders(run, backends, reference)
    except UserError as exc:
        log(f"no models: {exc}")
        return Loaded(run.profile, missing=[Missing("every model", str(exc))])
    loaded = Loaded(run.profile, labels=labels, examples=examples)
    warmup = examples[0].text if examples else "a warm-up sentence"
    for i, (name, load) in enumerate(loaders, 1):
        started = time.perf_counter()
        try:
            predictors = load()
            for p in predictors:
                check_predictor(p, warmup, len(labels))
        except Exception as exc:  # whatever breaks one model (bad pickle, missing file, shape) must not stop the rest
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            loaded.missing.append(Missing(name, reason))
            log(f"[{i}/{len(loaders)}] {name}: MISSING ({reason})")
            continue
        loaded.predictors += predictors
        log(f"[{i}/{len(loaders)}] {name}: loaded {', '.join(p.name for p in predictors)} "
            f"in {time.perf_counter() - started:.1f}s")
    return loaded


def load_profile(profile: str, artifacts="artifacts", reports="reports", log=print,
                 backends=DEFAULT_BACKENDS, reference: str = "auto") -> Loaded:
    """The models of `profile`'s run under artifacts/<profile>/. An unknown profile raises UserError."""
    return load_run(open_run(profile, artifacts, reports), log=log, backends=backends, reference=reference)


def check_predictor(predictor: Predictor, text: str, n_labels: int) -> None:
    """One prediction (which also warms caches up) that must give one probability per label."""
    proba = predictor.predict_proba([text])
    if proba.shape != (1, n_labels):
        raise UserError(f"returns probabilities of shape {proba.shape}, expected (1, {n_labels})")


def pick_examples(split, labels: list[str], n: int) -> list[Example]:
    """Up to `n` short test sentences, about as many of each label, the same ones every start."""
    test = split[(split["split"] == "test") & (split["text"].str.len() <= 200)]
    per_label = max(1, n // max(1, len(labels)))
    picked = test.sample(frac=1.0, random_state=0).groupby("label").head(per_label).head(n)
    return [Example(row.text, labels[int(row.label)]) for row in picked.itertuples()]
