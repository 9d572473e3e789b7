"""Build a package: one variant's files (ship/parts.py), the runtime, labels, requirements, the model card and the
sha256 manifest, written into a temporary folder that replaces `out` only when complete.

Before the card and the final manifest are written, the runtime loads the new package (checksums first, as a user's
would) and its probabilities on the first test sentences are compared with the validated export's: a package that
would answer differently from what was measured is never written. The run's artifacts are only read.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from bench.export import VALIDATION_SENTENCES
from bench.zoo import load_variant, loader_context
from distill import data as datasets
from distill.atomic import atomic_dir, write_json, write_text
from distill.catalogue import parse_model_id
from distill.environment import git_commit
from distill.errors import UserError
from distill.families import FAMILIES
from distill.pipeline import Run
from distill.students import wordpiece_cache

from .model_card import model_card
from .parts import PackageFolder, Source, needed_libraries, needs_word_cache, write_part
from .runtime import predict as runtime

RUNTIME_FILE = Path(runtime.__file__)
# The package must give the validated export's probabilities: it runs the same files the same way.
PACKAGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Check:
    """The new package against the validated export, on the first test sentences."""
    sentences: int
    max_abs_diff: float


def source_of(run: Run, entry: dict, models: dict) -> Source:
    model, backend = entry["model"], entry["backend"]
    estimator = models[model]
    native = backend == FAMILIES[entry["family"]].native_backend
    return Source(model, entry["family"], backend, estimator,
                  None if native else run.verified_dir(f"export/{model}/{backend}"),
                  run.teacher_dir() if model == "teacher" else None,
                  loader_context(run, model, estimator, backend)["max_length"])


def refuse_to_replace_foreign(out: Path) -> None:
    """`--out` may replace an earlier package, never a folder of something else."""
    if out.exists() and any(out.iterdir()) and not (out / runtime.MANIFEST).is_file():
        raise UserError(f"{out} exists and is not a package; choose another --out or empty it first")


def requirements_text(spec: dict) -> str:
    pins = [f"{library}=={metadata.version(library)}" for library in needed_libraries(spec)]
    return (f"# What predict.py imports, at the versions this package was validated with (Python "
            f"{platform.python_version()}).\n" + "\n".join(pins) + "\n")


def write_contents(run: Run, entry: dict, source: Source, folder: PackageFolder) -> dict:
    """Everything but the card and the manifest; returns package.json's content."""
    spec = write_part(source, folder)
    folder.copy(RUNTIME_FILE, "predict.py")
    if needs_word_cache(spec):
        folder.copy(Path(wordpiece_cache.__file__), "wordpiece_cache.py")
    folder.write_json("labels.json", run.labels())
    folder.write_text("requirements.txt", requirements_text(spec))
    info = {"format": runtime.FORMAT, "model": entry["model"], "backend": entry["backend"],
            "family": entry["family"], "kind": parse_model_id(entry["model"]).kind, "run": run.profile,
            "made_by": f"my-bert-is-too-big {git_commit()}", "runtime": spec}
    folder.write_json("package.json", info)
    return info


def check_against_export(run: Run, entry: dict, models: dict, directory: Path) -> Check:
    texts = datasets.texts_labels(run.split(), "test")[0][:VALIDATION_SENTENCES]
    packaged = runtime.Classifier.load(directory)
    if packaged.labels != run.labels():
        raise UserError(f"the package's labels {packaged.labels} are not the run's {run.labels()}; report this bug")
    exported = load_variant(run, entry["model"], entry["backend"], models).predict_proba(texts)
    drift = float(np.abs(packaged.predict_proba(texts) - exported).max())
    if drift > PACKAGE_TOLERANCE:
        raise UserError(f"the packaged {entry['model']}/{entry['backend']} moves probabilities by {drift:.3g} from "
                        f"its validated export (more than {PACKAGE_TOLERANCE:g}); nothing was written: report this bug")
    return Check(len(texts), drift)


def build_package(run: Run, entry: dict, out: Path, bench: dict | None = None) -> Check:
    """Write the package of `entry` (a variant of the run's export manifest) to `out`."""
    out = Path(out)
    refuse_to_replace_foreign(out)
    models = run.models()
    source = source_of(run, entry, models)
    with atomic_dir(out) as tmp:
        info = write_contents(run, entry, source, PackageFolder(tmp))
        write_json(tmp / runtime.MANIFEST, {"format": runtime.FORMAT, "files": runtime.digests(tmp)})
        check = check_against_export(run, entry, models, tmp)
        write_text(tmp / "MODEL_CARD.md", model_card(run, entry, info, bench, tmp, check))
        write_json(tmp / runtime.MANIFEST, {"format": runtime.FORMAT, "files": runtime.digests(tmp)})
    return check
