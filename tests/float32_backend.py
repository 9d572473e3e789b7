"""A backend added the way docs/add-a-backend.md says, for tests/test_bench_export.py: one new module whose last line
registers it. `numpy-f32` is the TF-IDF students' `numpy` export with its arrays in float32: half the bytes, and
probabilities within 1e-5 of the source's."""
from __future__ import annotations

import numpy as np

from distill.families import Backend, add_backend
from distill.families.exporters import export_linear_numpy, load_linear_numpy


def export_float32(estimator, out, sample_texts):
    export_linear_numpy(estimator, out, sample_texts)
    with np.load(out / "linear.npz") as arrays:
        halved = {name: arrays[name].astype(np.float32) for name in arrays.files}
    np.savez(out / "linear.npz", **halved)


add_backend("sklearn", Backend("numpy-f32", export_float32, load_linear_numpy, tolerance=1e-5))
