"""The optional OpenVINO backends of the transformer family (distill/families/openvino.py), through the registry only:
a tiny teacher labelled by OpenVINO, exported to every OpenVINO backend by `mbtb export`, validated against PyTorch
within each backend's tolerance, served, and refused by `mbtb package`, which names the packageable variants
(here the teacher's ONNX export).

The teacher is conftest's sensitive tiny BERT (its probabilities vary from text to text, so a broken export shows).
Skipped when openvino, nncf or optimum-intel is not installed (requirements-openvino.txt).
"""
from __future__ import annotations

import numpy as np
import pytest

for package in ("openvino", "nncf", "optimum.intel"):
    pytest.importorskip(package, reason="the OpenVINO backends need requirements-openvino.txt installed")

from bench.export import export_all  # noqa: E402
from bench.zoo import load_variant  # noqa: E402
from distill import data as datasets  # noqa: E402
from distill.errors import UserError  # noqa: E402
from distill.families import FAMILIES  # noqa: E402
from distill.families.manifest import read_manifest  # noqa: E402
from distill.families.registry import FP32, INT8  # noqa: E402
from distill.pipeline import Run  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

OPENVINO = ["openvino", "openvino-bf16", "openvino-int8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, sensitive_teacher) -> Run:
    """A tiny run whose soft labels the teacher's OpenVINO fp32 export computed (one cheap student)."""
    root = tmp_path_factory.mktemp("engines-run")
    cfg = tiny_config(sensitive_teacher, ['labelling.backend="openvino"', 'students.names=["tfidf_lr"]',
                                          'students.modes=["baseline"]'])
    run = Run("tiny", cfg, root / "artifacts", root / "reports", progress=False, log=lambda *_: None)
    run.all()
    return run


@pytest.fixture(scope="module")
def exported(run) -> dict:
    entries = export_all(run, models_filter=["teacher"], backends_filter=["onnx", *OPENVINO], log=lambda *_: None,
                         progress=False)
    return {e["backend"]: e for e in entries}


@pytest.fixture(scope="module")
def texts(run) -> list[str]:
    split = run.split()
    return datasets.texts_labels(split, "test")[0] + datasets.texts_labels(split, "dev")[0]


def test_the_backends_are_registered_in_the_transformer_family_with_their_drift_rules():
    backends = FAMILIES["transformer"].backends
    assert (backends["openvino"].tolerance, backends["openvino"].lossy) == (FP32, False)
    assert backends["openvino-bf16"].lossy and backends["openvino-int8"].lossy
    assert backends["openvino-int8"].tolerance == INT8
    assert set(OPENVINO) <= set(FAMILIES["transformer"].labellers())


def test_the_openvino_labeller_passes_its_check_and_labels_the_run(run):
    info = run.stage_info("labeller")
    assert info["backend"] == "openvino"
    trial = next(t for t in info["trials"] if t["backend"] == "openvino")
    assert trial["passed"] and trial["max_prob_diff"] <= FP32


def test_every_openvino_backend_is_exported_validated_and_listed(run, exported):
    assert set(exported) == {"torch", "onnx", *OPENVINO}
    for backend in OPENVINO:
        entry = exported[backend]
        assert entry["status"] == "ok", entry.get("error")
        assert entry["tolerance"] == FAMILIES["transformer"].backends[backend].tolerance
    assert exported["openvino"]["max_abs_diff"] <= FP32 and "drift_note" not in exported["openvino"]
    listed = {v.name for v in read_manifest(run.dir).ok()}
    assert {f"teacher/{b}" for b in OPENVINO} <= listed


@pytest.mark.parametrize("backend", OPENVINO)
def test_each_export_gives_pytorchs_probabilities_within_its_tolerance(run, exported, texts, backend):
    models = run.models()
    torch_probs = load_variant(run, "teacher", "torch", models).predict_proba(texts)
    probs = load_variant(run, "teacher", backend, models).predict_proba(texts)
    rule = FAMILIES["transformer"].backends[backend]
    drift, agreement = np.abs(probs - torch_probs).max(), np.mean(probs.argmax(1) == torch_probs.argmax(1))
    assert rule.verdict(drift, agreement) != "broken", (backend, drift, agreement)
    if backend == "openvino":
        np.testing.assert_allclose(probs, torch_probs, atol=FP32)


def test_serve_loads_the_openvino_exports(run, exported, texts):
    from serve import load_run
    served = {p.name: p for p in load_run(run, log=lambda *_: None, backends=tuple(OPENVINO)).predictors}
    assert {f"teacher/{b}" for b in OPENVINO} <= set(served)
    assert served["teacher/openvino"].predict_proba(texts[:3]).shape == (3, len(run.labels()))


def test_package_refuses_an_openvino_export_and_names_what_it_can_package(run, exported):
    from ship.choose import named_variant
    with pytest.raises(UserError, match=r"teacher/openvino runs only inside the harness.*packageable: teacher/onnx"):
        named_variant(read_manifest(run.dir), "teacher/openvino")
