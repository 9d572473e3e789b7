"""The distillation run for one profile: its stage store, its catalogue and its stage graph, behind one object.

    data -> teacher -> labeller -> soft_labels -> students/<student>-<mode> -> evaluation (reports/<run>/accuracy.*)

`Run` is what commands open: the catalogue of the run's models (distill/catalogue.py) that bench, reports and serve
read, plus what builds them: the stage store (distill/store.py) and the stage graph (distill/stages.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import stages
from .atomic import write_json
from .catalogue import MODES, TRAINED_ON, TRANSFER_MODES, Catalogue, logits_of
from .store import StageStore
from .student_stage import class_weights

__all__ = ["Run", "MODES", "TRANSFER_MODES", "TRAINED_ON", "class_weights", "logits_of"]


class Run(Catalogue):
    """The run `profile` (configuration `cfg`) in artifacts/<profile>/ and reports/<profile>/."""

    def __init__(self, profile: str, cfg: dict, artifacts="artifacts", reports="reports", progress=True, log=print,
                 rebuild_corrupt=False, base_profile: str | None = None):
        store = StageStore(Path(artifacts) / profile, log, rebuild_corrupt, after_build=self._record_once)
        super().__init__(profile, cfg, store, Path(reports) / profile)
        self.base_profile = base_profile or profile
        self.progress = progress
        self.log = log
        self.rebuild_corrupt = rebuild_corrupt

    # --- the store ---------------------------------------------------------------------------------------------
    @property
    def timings(self) -> list[dict]:
        """One row per stage built or found cached by this Run: stage, status (built | cached), seconds."""
        return self.store.timings

    def stage(self, name: str, inputs: dict, build) -> tuple[Path, dict]:
        """Run `build(tmp_dir) -> info` unless `name` is cached under the same inputs. Returns (dir, info)."""
        return self.store.stage(name, inputs, build)

    def partial_dir(self, name: str, key: str) -> Path:
        return self.store.partial_dir(name, key)

    # --- the stage graph ---------------------------------------------------------------------------------------
    def all(self) -> pd.DataFrame:
        """`mbtb distill`: every stage of the spine, then its evaluation; returns the accuracy table."""
        spine = stages.spine(self)
        self.store.remove_stale_temporaries()
        table = stages.build_all(self, spine)
        self.record()
        return table

    def build_data(self):
        stages.build(self, stages.DATA)

    def build_teacher(self):
        stages.build(self, stages.TEACHER)

    def build_labeller(self):
        stages.build(self, stages.LABELLER)

    def build_soft_labels(self):
        stages.build(self, stages.SOFT_LABELS)

    def build_transfer(self):
        stages.build(self, stages.TRANSFER)

    def build_student(self, name: str, mode: str):
        stages.build(self, stages.student(name, mode))

    def evaluate(self) -> pd.DataFrame:
        return stages.build(self, stages.EVALUATION)

    # --- the run's record --------------------------------------------------------------------------------------
    def record(self) -> None:
        """artifacts/<run>/run.json: which profile, data and configuration this run is; bench, serve and later
        commands reopen the run with it, and `distill/runs.py` keeps other runs out of its directory."""
        write_json(self.dir / "run.json", {"profile": self.profile, "base_profile": self.base_profile,
                                           "config": self.cfg})

    def _record_once(self) -> None:
        if not (self.dir / "run.json").exists():   # the run's first finished stage says what the run is
            self.record()

