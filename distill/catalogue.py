"""The catalogue of a run: read-only access to what its stages made, for evaluation, bench, reports and serve.

Model ids: `teacher`, `<student>-<mode>` (`bilstm-distilled`) and `ensemble-<mode>`, the students of one mode
averaged. Every reader reaches an artifact through the stage store's verified directories, so an artifact edited
after it was written is refused, whoever reads it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from . import students as student_zoo
from .errors import UserError
from .store import StageStore

MODES = ("baseline", "distilled")            # the spine, built by `make distill`
TRANSFER_MODES = ("augmented", "annealed")   # trained on train + the transfer set, built by `make ablation`
TRAINED_ON = {
    "teacher": "gold labels (fine-tuned)",
    "baseline": "gold labels",
    "distilled": "teacher logits, train",
    "augmented": "teacher logits, train + transfer set",
    "annealed": "teacher logits, train + transfer set, annealed",
}


@dataclass(frozen=True)
class ModelId:
    """What a model id says. `mode` is how the model was trained, a key of TRAINED_ON (an ensemble's is its
    members'); `student` is the student's name (None for the teacher and ensembles)."""
    student: str | None
    mode: str
    ensemble: bool = False

    @property
    def kind(self) -> str:
        """The `kind` column of the reports: teacher | ensemble | the training mode of a student."""
        return "ensemble" if self.ensemble else self.mode


def parse_model_id(model_id: str) -> ModelId:
    """The model-id grammar: `teacher`, `<student>-<mode>`, `ensemble-<mode>`."""
    if model_id == "teacher":
        return ModelId(None, "teacher")
    name, _, mode = model_id.rpartition("-")
    if model_id.startswith("ensemble-"):
        return ModelId(None, mode, ensemble=True)
    return ModelId(name or None, mode)


class Catalogue:
    """The models and data of the run `profile` (configuration `cfg`) whose stages are in `store`. `models()` is the
    one list of models that evaluation, export, bench, report and serve share."""

    def __init__(self, profile: str, cfg: dict, store: StageStore, reports: Path):
        self.profile = profile               # the run's name: its directory under artifacts/ and reports/
        self.cfg = cfg
        self.store = store
        self.dir = store.dir
        self.reports = Path(reports)

    # --- stages, read-only -------------------------------------------------------------------------------------
    def key(self, name: str) -> str | None:
        return self.store.key(name)

    def stage_info(self, name: str) -> dict:
        return self.store.info(name)

    def verified_dir(self, name: str) -> Path:
        return self.store.verified_dir(name)

    # --- data and teacher --------------------------------------------------------------------------------------
    def split(self) -> pd.DataFrame:
        return read_parquet(self.verified_dir("data") / "split.parquet")

    def labels(self) -> list[str]:
        path = self.verified_dir("data") / "labels.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} and run again") from None

    def metric(self):
        """The run's chosen metric (`[eval] metric`), bound to its class names."""
        from .metrics import Metric
        return Metric.parse(self.cfg["eval"].get("metric", "accuracy"), self.labels())

    def teacher_dir(self) -> Path:
        return self.verified_dir("teacher") / "model"

    def labeller(self):
        """The form of the teacher the `labeller` stage chose (distill/labelling.py)."""
        from . import labelling
        return labelling.load(self)

    def labeller_export(self, backend: str) -> Path | None:
        """The teacher's `backend` export made by the labeller stage, when it made one (bench reuses it)."""
        if self.key("labeller") is None:
            return None
        path = self.verified_dir("labeller") / backend
        return path if path.is_dir() else None

    def logits_source(self) -> str:
        from . import labelling
        return labelling.source_line(self.stage_info("labeller"))

    def soft_labels(self) -> pd.DataFrame:
        return read_parquet(self.verified_dir("soft_labels") / "soft_labels.parquet")

    def transfer_set(self) -> pd.DataFrame:
        return read_parquet(self.verified_dir("transfer") / "transfer.parquet")

    # --- models ------------------------------------------------------------------------------------------------
    def student_names(self) -> list[str]:
        """The spine's students: `students.names` x `students.modes`."""
        return [f"{n}-{m}" for m in self.cfg["students"]["modes"] for n in self.cfg["students"]["names"]]

    def model_ids(self, modes=None) -> list[str]:
        """Every model of the run, in report order: the teacher, then per training mode its students and their
        ensemble. The spine's students (`students.names` x `students.modes`) must be built; students trained on the
        transfer set (`make ablation`) are included once built. `modes` keeps only those training modes."""
        required = set(self.student_names())
        names = list(dict.fromkeys([*self.cfg["students"]["names"], *self.cfg.get("ablation", {}).get("students", [])]))
        ensemble = self.cfg["students"].get("ensemble", [])
        ids = ["teacher"]
        for mode in (*MODES, *TRANSFER_MODES):
            if modes is not None and mode not in modes:
                continue
            built = [f"{n}-{mode}" for n in names
                     if f"{n}-{mode}" in required or self.key(f"students/{n}-{mode}") is not None]
            ids += built
            if sum(f"{n}-{mode}" in built for n in ensemble) >= 2:
                ids.append(f"ensemble-{mode}")
        return ids

    def ensemble_members(self, model_id: str) -> list[str]:
        """The students an ensemble averages ([] for any other model)."""
        parsed = parse_model_id(model_id)
        if not parsed.ensemble:
            return []
        return [f"{n}-{parsed.mode}" for n in self.cfg["students"].get("ensemble", [])
                if self.store.meta(f"students/{n}-{parsed.mode}") is not None]

    def models(self, modes=None) -> dict:
        """model id -> fitted estimator (None for the teacher, whose weights live in `teacher_dir()`), ensembles
        included."""
        out = {}
        for model_id in self.model_ids(modes):
            out[model_id] = self.model(model_id, out)
        return out

    def model(self, model_id: str, loaded: dict | None = None):
        """One model of `model_ids()`, loaded (members of an ensemble are taken from `loaded` when there)."""
        loaded = loaded if loaded is not None else {}
        if model_id == "teacher":
            return None
        members = self.ensemble_members(model_id)
        if members:
            return student_zoo.AveragingEnsemble.from_fitted(
                [(m, loaded[m] if m in loaded else self.student(m)) for m in members])
        return self.student(model_id)

    def student(self, model_id: str):
        path = self.verified_dir(f"students/{model_id}") / "model.joblib"
        try:
            return joblib.load(path)
        except Exception:  # a truncated or foreign pickle raises any of a dozen types
            raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} and run again") from None


def logits_of(soft: pd.DataFrame, part: str) -> np.ndarray:
    """The teacher's logits on one part of the split (train | dev | test), from the soft labels."""
    rows = soft[soft["split"] == part]
    return rows[[c for c in soft.columns if c.startswith("logit_")]].to_numpy(dtype=np.float32)


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception:  # pyarrow raises several types for a truncated or foreign file
        raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} and run again") from None
