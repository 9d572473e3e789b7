"""The labeller the `labeller` stage chose (distill/labelling.py): `labeller(texts, progress=...) -> logits`, with the
teacher in PyTorch or through one of its exports, read by the export's registered `logits` reader
(distill/families). A Ray replica (distill/ray_labelling.py) rebuilds one from the same files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .families.registry import FAMILIES, TEACHER_FAMILY


class Labeller:
    """`labeller(texts, progress=...) -> logits` with the backend the `labeller` stage chose."""

    def __init__(self, backend: str, directory: Path, teacher_dir: Path, max_length: int, batch_size: int):
        self.backend, self.max_length, self.batch_size = backend, max_length, batch_size
        self.directory, self.teacher_dir = directory, teacher_dir   # what a Ray replica rebuilds it from
        if backend == "torch":
            from . import teacher as T
            self.tokenizer, self.model = T.load_pretrained(str(teacher_dir))
            self.model.to(T.device())
        else:
            self.export_logits = FAMILIES[TEACHER_FAMILY].labellers()[backend].logits(Path(directory) / backend)

    def __call__(self, texts: list[str], progress=False) -> np.ndarray:
        if self.backend == "torch":
            from . import teacher as T
            return T.predict_logits(self.model, self.tokenizer, texts, self.max_length, self.batch_size,
                                    progress=progress)
        return self.export_logits(texts, self.max_length, self.batch_size, progress=progress)
