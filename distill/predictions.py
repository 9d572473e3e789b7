"""Every model's predicted label on the dev and test splits, kept as one cached stage (artifacts/<run>/predictions/),
so the report can compare models example by example (a paired bootstrap) and on dev without loading them again.

    split, gold, teacher, <model id>, ...     one row per dev or test example, one label column per model
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import data as datasets
from .metrics import Metric
from .pipeline import Run, logits_of

SPLITS = ("dev", "test")
VERSION = 1


def source_keys(run: Run, model_id: str) -> list[str | None]:
    """The stage keys a model's predictions depend on (an ensemble's are its members')."""
    return [run.key(f"students/{m}") for m in run.ensemble_members(model_id) or [model_id]]


def model_predictions(run: Run) -> pd.DataFrame:
    """The stage's table: the teacher's labels come from its soft labels (PyTorch on dev and test), each student's
    from its own `predict_proba`, as `evaluate` scores them."""
    students = [m for m in run.model_ids() if m != "teacher"]
    inputs = {"data": run.key("data"), "soft_labels": run.key("soft_labels"), "version": VERSION,
              "models": {m: source_keys(run, m) for m in students}}

    def build(tmp):
        split, soft = run.split(), run.soft_labels()
        parts = [datasets.texts_labels(split, part) for part in SPLITS]
        texts = [t for part_texts, _ in parts for t in part_texts]
        table = pd.DataFrame({"split": np.repeat(SPLITS, [len(t) for t, _ in parts]),
                              "gold": np.concatenate([gold for _, gold in parts])})
        table["teacher"] = np.concatenate([logits_of(soft, part).argmax(1) for part in SPLITS])
        for model_id, estimator in run.models().items():
            if estimator is not None:
                table[model_id] = np.asarray(estimator.predict_proba(texts)).argmax(1)
        table.to_parquet(tmp / "predictions.parquet", index=False)
        return {"models": len(students) + 1, "examples": {part: len(t) for part, (t, _) in zip(SPLITS, parts)}}

    stage_dir, _ = run.stage("predictions", inputs, build)
    return pd.read_parquet(stage_dir / "predictions.parquet")


def teacher_training(run: Run) -> dict | None:
    """The teacher's fine-tune in brief: steps taken of those planned, the dev curve, where it peaked; None for a
    teacher used as it is."""
    info = run.stage_info("teacher")
    curve = [[h["step"], round(h["dev_accuracy"], 4)] for h in info.get("history", [])]
    if not info.get("steps") or not curve:
        return None
    best = max(curve, key=lambda point: point[1])   # the first of equal scores, as early stopping keeps it
    return {"steps": info["steps"], "planned_steps": info.get("planned_steps"), "best_step": best[0],
            "dev_curve": curve}


@dataclass(frozen=True)
class Predictions:
    """Scores and paired comparisons of a run's models in its metric, from `model_predictions`."""
    table: pd.DataFrame
    metric: Metric
    n_resamples: int = 1000
    seed: int = 13
    teacher_training: dict | None = None   # how the teacher's fine-tune went (`teacher_training`)

    @classmethod
    def of_run(cls, run: Run) -> "Predictions":
        c = run.cfg["eval"]
        return cls(model_predictions(run), run.metric(), c["bootstrap"], c["seed"], teacher_training(run))

    def models(self) -> list[str]:
        return [c for c in self.table.columns if c not in ("split", "gold")]

    def _part(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split]

    def score(self, model: str, split: str = "test") -> float | None:
        rows = self._part(split)
        return self.metric(rows["gold"], rows[model]) if len(rows) and model in rows else None

    def difference(self, model: str, baseline: str, split: str = "test") -> tuple[float, float, float]:
        """metric(model) - metric(baseline) on `split` with its paired bootstrap 95% CI."""
        rows = self._part(split)
        return self.metric.difference_ci(rows["gold"], rows[model], rows[baseline], self.n_resamples, self.seed)
