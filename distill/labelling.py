"""Labelling: the teacher's logits on the training text (soft labels), the transfer set and any unlabelled text,
computed by the fastest form of the teacher that stays faithful to it.

    [labelling]
    backend = "auto"     # auto | torch | a teacher export that can label: onnx | ort-opt | onnx-int8
    tolerance = 0.2      # largest mean |logit - logit_torch| on the validation texts
    validation_texts = 256
    engine = "local"     # local | ray: where the logits are computed (distill/ray_labelling.py)
    shard_size = 2000    # texts per Ray shard, the unit of work and of resumption
    actors = 0           # teacher replicas on Ray; 0: one per GPU, else one per 4 CPUs

The choice is the cached stage `labeller` (keyed by the teacher and this section). Its candidates are the teacher
family's backends in the one registry (distill/families; auto: those marked `auto_labeller`, ONNX int8 and
ORT-optimised fp32, OpenVINO bf16 and int8 where installed: the same files bench validates and times). It exports
each, runs it and PyTorch on the first `validation_texts` dev texts, and keeps the fastest export that passes: its backend's drift rule (the one bench
validates it by) does not find it broken, and its mean |Δlogit| is within `tolerance`; PyTorch itself when none
passes, or when it is clearly faster (`TORCH_MARGIN`: a GPU, say). A backend named outright must pass the same
check. Soft labels and the transfer set record which backend made their logits (`logits_source` in their stage
info).

`engine` says where that backend runs, not what it computes, so it is not part of the `labeller` stage's key: "local"
labels in this process; "ray" hands the texts to a pool of replicas on a Ray cluster (Ray Data), resumable shard by
shard; it needs `pip install .[scale]`.

The `assistant*` keys choose a teacher assistant, a student that labels the transfer set in the teacher's place
(distill/assistant.py); they are not part of the `labeller` stage's key either.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import data as datasets
from .atomic import write_json
from .chunked_labelling import label_in_chunks
from .config import fingerprint, section
from .errors import UserError
from .families.registry import BROKEN, FAMILIES, TEACHER_FAMILY, Backend
from .int8_onnx import CALIBRATION_TEXTS
from .labeller import Labeller
from .students.soft import softmax

TEACHER = FAMILIES[TEACHER_FAMILY]   # the labeller's candidates are the teacher's exports that have a `logits` reader
# PyTorch replaces a faithful export only when this much faster. On a near tie the choice would otherwise follow the
# machine's noise, and two equally faithful backends still differ in the last bits of the logits, enough to move a
# student trained on them by a point (the full profile: ORT 19 vs PyTorch 21 texts/s picked PyTorch on a rerun).
TORCH_MARGIN = 1.25
ENGINE_KEYS = ("engine", "shard_size", "actors")   # where the logits are computed: not in the labeller's key
# The teacher assistant's settings (distill/assistant.py) choose who labels the transfer set, not the teacher's form.
ASSISTANT_KEYS = ("assistant", "assistant_candidates", "assistant_agreement", "assistant_tolerance",
                  "assistant_compare", "assistant_compare_student")


def settings(cfg: dict) -> dict:
    """The [labelling] section of `cfg` (configs/default.toml's values for keys it leaves out), checked, and Ray
    installed when it asks for Ray. A profile's section is checked when it is loaded; the CLI calls this once more
    so a missing Ray fails before the teacher's fine-tune, and stages read `run.cfg["labelling"]` itself."""
    c = section(cfg, "labelling")
    if c["engine"] == "ray" and importlib.util.find_spec("ray") is None:
        from .ray_labelling import MISSING
        raise UserError(MISSING)
    return c


class Labelled(NamedTuple):
    logits: np.ndarray
    seconds: float   # spent labelling, over every run that labelled a reused chunk or shard
    reused: int      # chunks or shards labelled by an earlier, interrupted run


def label_texts(run, label, texts: list[str], stage: str, key=None, chunk_size: int | None = None) -> Labelled:
    """`label`'s logits on `texts`, for the stage `stage` of `run`, on the configured engine: in this process (in
    chunks of `chunk_size` saved as they finish, when given), or on Ray in shards. Finished chunks or shards are kept
    under artifacts/<profile>/.<stage>.partial/ for the work keyed `key` (by default the labeller's) until every text
    is labelled, so a rerun after a crash labels only what was not finished."""
    c = run.cfg["labelling"]
    key = run.key("labeller") if key is None else key
    partial = run.store.partial_path(stage)
    if c["engine"] == "ray":
        from .ray_labelling import label_in_shards
        shards = run.store.partial_dir(stage, fingerprint(key, c["shard_size"]))
        labelled = Labelled(*label_in_shards(texts, label, shards, c, run.progress, run.log))
        run.log(f"  {stage}: {len(texts):,} texts labelled on Ray in {labelled.seconds:.0f}s "
                f"({labelled.reused} shard(s) reused)")
    elif chunk_size is not None:
        labelled = Labelled(*label_in_chunks(texts, label, partial, key, chunk_size, run.progress))
    else:
        started = time.time()
        labelled = Labelled(label(texts, progress=run.progress), time.time() - started, 0)
    shutil.rmtree(partial, ignore_errors=True)
    return labelled


def timed(fn, texts: list[str]) -> tuple[np.ndarray, float]:
    """(fn(texts), texts/s)."""
    started = time.perf_counter()
    logits = fn(texts)
    return logits, len(texts) / max(time.perf_counter() - started, 1e-9)


def choose(teacher_dir: Path, sample: list[str], c: dict, max_length: int, out: Path, log=print,
           calibration: list[str] | None = None) -> dict:
    """Export and validate the candidate backends into `out/<backend>/`; returns the stage info (the choice and every
    trial). Every candidate's export is kept: bench reuses them instead of exporting the teacher again."""
    from . import teacher as T

    tokenizer, model = T.load_pretrained(str(teacher_dir))
    model.to(T.device())
    reference, torch_rate = timed(lambda t: T.predict_logits(model, tokenizer, t, max_length, c["batch_size"],
                                                             progress=False), sample)
    del model
    trials = [{"backend": "torch", "texts_per_second": round(torch_rate, 1), "mean_abs_diff": 0.0,
               "max_abs_diff": 0.0, "agreement": 1.0, "passed": True}]
    for backend in _candidates(c["backend"]):
        trial = _trial(TEACHER.labellers()[backend], teacher_dir, out / backend, sample, reference, c, max_length,
                       calibration or sample)
        trials.append(trial)
        log(f"  labeller: {backend} {trial['texts_per_second']:.0f} texts/s vs torch {torch_rate:.0f}, "
            f"mean |Δlogit| {trial['mean_abs_diff']:.4f} ({'passes' if trial['passed'] else 'fails'} "
            f"tolerance {c['tolerance']:g})")
    if c["backend"] in ("auto", "torch"):
        chosen = pick(trials)
    else:
        chosen = trials[-1]
        if not chosen["passed"]:
            raise UserError(f"labelling.backend = {c['backend']!r} moves the teacher's logits by "
                            f"{chosen['mean_abs_diff']:.3g} on average on {len(sample)} dev texts, past "
                            f"labelling.tolerance = {c['tolerance']:g}; raise the tolerance, or set "
                            "labelling.backend to \"auto\" or \"torch\"")
    write_json(out / "choice.json", {"backend": chosen["backend"]})
    return {"backend": chosen["backend"], "validation_texts": len(sample), "trials": trials}


def _candidates(setting: str) -> tuple[str, ...]:
    return {"auto": TEACHER.auto_labellers, "torch": ()}.get(setting, (setting,))


def _trial(backend: Backend, teacher_dir: Path, directory: Path, sample: list[str], reference: np.ndarray, c: dict,
           max_length: int, calibration: list[str]) -> dict:
    """Export the teacher to `backend` in `directory`, time its logits on `sample` and compare them with PyTorch's
    (`reference`). It passes when its backend's drift rule (the one bench validates it by) does not find it broken
    and its mean |Δlogit| is within labelling.tolerance, how far the user lets soft labels move."""
    logits, rate, export_seconds = export_and_time(backend, teacher_dir, directory, sample, max_length,
                                                   c["batch_size"], calibration)
    trial = {"backend": backend.name, "texts_per_second": round(rate, 1), **compare(logits, reference),
             "export_seconds": round(export_seconds, 1)}
    trial["drift"] = backend.verdict(trial["max_prob_diff"], trial["agreement"])
    trial["passed"] = bool(trial["drift"] != BROKEN and trial["mean_abs_diff"] <= c["tolerance"])
    return trial


def export_and_time(backend: Backend, source, directory: Path, sample: list[str], max_length: int,
                    batch_size: int, calibration: list[str]) -> tuple[np.ndarray, float, float]:
    """Export `source` (the teacher's directory, or a fitted transformer student) to `backend` in `directory`,
    calibrated on `calibration` (training text), and time its logits on `sample` after a warm-up. Returns (logits,
    texts/s, seconds the export took)."""
    from .teacher_onnx import quiet_exporters
    directory.mkdir(parents=True)
    started = time.time()
    with quiet_exporters():
        backend.export(source, directory, calibration)   # int8 calibrates on training text, not on `sample`
    export_seconds = time.time() - started
    runner = backend.logits(directory)
    runner(sample[:8], max_length, batch_size)  # session warm-up
    logits, rate = timed(lambda t: runner(t, max_length, batch_size), sample)
    return logits, rate, export_seconds


def compare(logits: np.ndarray, reference: np.ndarray) -> dict:
    """How far `logits` are from `reference` on the same texts: mean and max |Δlogit|, argmax agreement, max |Δp|."""
    diff = np.abs(logits - reference)
    return {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
            "agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            "max_prob_diff": float(np.abs(softmax(logits) - softmax(reference)).max())}


def pick(trials: list[dict]) -> dict:
    """The fastest export that passed, unless PyTorch (`trials[0]`) is `TORCH_MARGIN` times faster or none passed."""
    torch_trial, exports = trials[0], [t for t in trials[1:] if t["passed"]]
    if not exports:
        return torch_trial
    fastest = max(exports, key=lambda t: t["texts_per_second"])
    return torch_trial if torch_trial["texts_per_second"] >= TORCH_MARGIN * fastest["texts_per_second"] else fastest


def labeller_inputs(run) -> dict:
    """What the `labeller` stage's key hashes: this section but where the logits are computed and the teacher
    assistant's keys, and the teacher."""
    keyed = {k: v for k, v in run.cfg["labelling"].items() if k not in ENGINE_KEYS + ASSISTANT_KEYS}
    # the candidates and their exporters' versions: another engine installed, or an exporter changed, labels anew
    candidates = {b: TEACHER.backends[b].version for b in _candidates(keyed["backend"])}
    return {"labelling": keyed, "teacher": run.key("teacher"), "candidates": candidates}


def build_labeller(run, tmp, inputs) -> dict:
    """The `labeller` stage of `run` (declared in distill/stages.py), written into `tmp`."""
    c = run.cfg["labelling"]
    sample = datasets.texts_labels(run.split(), "dev")[0][:c["validation_texts"]]
    if not sample:
        raise UserError("the dev split is empty, so the labeller cannot be validated; give more data")
    calibration = datasets.texts_labels(run.split(), "train")[0][:CALIBRATION_TEXTS]
    return choose(run.teacher_dir(), sample, c, run.cfg["teacher"]["max_length"], tmp, run.log, calibration)


def labeller_done(run, info) -> None:
    chosen = next(t for t in info["trials"] if t["backend"] == info["backend"])
    run.log(f"  labeller: {source_line(info)} ({chosen['texts_per_second']:.0f} texts/s)")


def source_line(info: dict) -> str:
    """How the logits were made, in words, for stage infos and reports."""
    chosen = next(t for t in info["trials"] if t["backend"] == info["backend"])
    if info["backend"] == "torch":
        return "teacher in PyTorch"
    return (f"teacher exported as {info['backend']} (mean |Δlogit| {chosen['mean_abs_diff']:.4f} vs PyTorch on "
            f"{info['validation_texts']} dev texts)")


def load(run) -> Labeller:
    directory = run.verified_dir("labeller")
    try:
        backend = json.loads((directory / "choice.json").read_text())["backend"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"cached artifact {directory / 'choice.json'} is unreadable; run again with "
                        "--rebuild-corrupt") from None
    return Labeller(backend, directory, run.teacher_dir(), run.cfg["teacher"]["max_length"],
                    run.cfg["labelling"]["batch_size"])
