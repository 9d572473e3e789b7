"""The optional engines' backends of the transformer family (distill/families/openvino.py, ctranslate2.py), through
the registry only: a tiny teacher labelled by one of them, exported to each by `mbtb export`, validated against
PyTorch within each backend's tolerance, timed by `mbtb bench`, served (from several threads at once), and refused
by `mbtb package`, which names the packageable variants (here the teacher's ONNX export).

The teacher is conftest's sensitive tiny BERT (its probabilities vary from text to text, so a broken export shows).
An engine that is not installed is skipped with the reason. The other tests leave these backends out
(conftest's TINY_OVERRIDES: export.skip); this run exports them.
"""
from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest

from bench.export import export_all
from bench.zoo import load_variant
from distill import data as datasets
from distill.config import apply_overrides
from distill.errors import UserError
from distill.families import FAMILIES
from distill.families.manifest import read_manifest
from distill.families.registry import BROKEN, FP32, INT8
from distill.int8_onnx import CALIBRATION_TEXTS
from distill.pipeline import Run
from tests.conftest import tiny_config

ENGINES = {"openvino": (("openvino", "nncf", "optimum.intel"), ["openvino", "openvino-bf16", "openvino-int8"]),
           "ctranslate2": (("ctranslate2",), ["ctranslate2", "ctranslate2-int8"])}
INSTALLED = [engine for engine, (packages, _) in ENGINES.items() if all(find_spec(p) for p in packages)]
BACKENDS = [b for engine in INSTALLED for b in ENGINES[engine][1]]
LOSSY = {"openvino-bf16", "openvino-int8", "ctranslate2-int8"}
if not INSTALLED:
    pytest.skip("no optional engine installed (requirements.txt: openvino, nncf, optimum-intel, ctranslate2)",
                allow_module_level=True)


def each_backend():
    return [pytest.param(b, marks=pytest.mark.skipif(engine not in INSTALLED, reason=f"{engine} is not installed"))
            for engine, (_, backends) in ENGINES.items() for b in backends]


@pytest.fixture(scope="module")
def run(tmp_path_factory, sensitive_teacher) -> Run:
    """A tiny run whose soft labels an optional engine's fp32 export computed (one cheap student)."""
    root = tmp_path_factory.mktemp("engines-run")
    cfg = tiny_config(sensitive_teacher, [f'labelling.backend="{BACKENDS[0]}"', 'students.names=["tfidf_lr"]',
                                          'students.modes=["baseline"]', "export.skip=[]"])
    run = Run("tiny", cfg, root / "artifacts", root / "reports", progress=False, log=lambda *_: None)
    run.all()
    return run


@pytest.fixture(scope="module")
def exported(run) -> dict:
    entries = export_all(run, models_filter=["teacher"], backends_filter=["onnx", *BACKENDS], log=lambda *_: None,
                         progress=False)
    return {e["backend"]: e for e in entries}


@pytest.fixture(scope="module")
def texts(run) -> list[str]:
    split = run.split()
    return datasets.texts_labels(split, "test")[0] + datasets.texts_labels(split, "dev")[0]


@pytest.mark.parametrize("backend", each_backend())
def test_each_backend_is_registered_with_its_drift_rule_and_can_label(backend):
    rule = FAMILIES["transformer"].backends[backend]
    assert rule.lossy == (backend in LOSSY)
    if not rule.lossy:
        assert rule.tolerance == FP32
    if "int8" in backend:
        assert rule.tolerance == INT8
    assert backend in FAMILIES["transformer"].labellers()


def test_an_optional_engine_labels_the_run_after_passing_its_check(run):
    info = run.stage_info("labeller")
    assert info["backend"] == BACKENDS[0]
    trial = next(t for t in info["trials"] if t["backend"] == BACKENDS[0])
    assert trial["passed"] and trial["max_prob_diff"] <= FP32


@pytest.mark.parametrize("backend", each_backend())
def test_each_backend_is_exported_validated_and_listed(run, exported, backend):
    entry = exported[backend]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["tolerance"] == FAMILIES["transformer"].backends[backend].tolerance
    assert entry["size_bytes"] > 0 and entry["accuracy"] > 0
    assert f"teacher/{backend}" in {v.name for v in read_manifest(run.dir).ok()}


@pytest.mark.parametrize("backend", each_backend())
def test_each_backend_gives_pytorchs_probabilities_within_its_tolerance(run, exported, texts, backend):
    models = run.models()
    torch_probs = load_variant(run, "teacher", "torch", models).predict_proba(texts)
    pred = load_variant(run, "teacher", backend, models)
    probs = pred.predict_proba(texts)
    rule = FAMILIES["transformer"].backends[backend]
    drift, agreement = np.abs(probs - torch_probs).max(), np.mean(probs.argmax(1) == torch_probs.argmax(1))
    assert rule.verdict(drift, agreement) != BROKEN, (backend, drift, agreement)
    if not rule.lossy:
        np.testing.assert_allclose(probs, torch_probs, atol=FP32)
    prepared = pred.prepare(texts[:5])   # the benchmark times run(prepare(texts)) and re-runs `prepared`
    np.testing.assert_allclose(pred.run(prepared), pred.run(prepared))
    np.testing.assert_allclose(pred.run(prepared), pred.predict_proba(texts[:5]))


@pytest.mark.parametrize("backend", each_backend())
def test_each_export_answers_calls_from_several_threads_at_once(run, exported, texts, backend):
    """serve runs up to one call per core on the same Predictor at once."""
    pred = load_variant(run, "teacher", backend, run.models())
    batches = [texts[i:i + 4] for i in range(0, 32, 4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(pred.predict_proba, batches))
    for batch, answer in zip(batches, answers):
        np.testing.assert_allclose(answer, pred.predict_proba(batch))


def test_bench_times_every_export(run, exported, tmp_path):
    from tests.test_frontier import bench_cases
    cases = bench_cases(run, "^teacher/(" + "|".join(BACKENDS) + ")$", tmp_path / "bench.json")
    assert {("teacher", b) for b in BACKENDS} <= set(cases)
    for backend in BACKENDS:
        assert cases[("teacher", backend)]["stats"]["median"] > 0


def test_serve_loads_every_export(run, exported, texts):
    from serve import load_run
    served = {p.name: p for p in load_run(run, log=lambda *_: None, backends=tuple(BACKENDS)).predictors}
    assert {f"teacher/{b}" for b in BACKENDS} <= set(served)
    assert served[f"teacher/{BACKENDS[0]}"].predict_proba(texts[:3]).shape == (3, len(run.labels()))


def test_package_refuses_them_and_names_what_it_can_package(run, exported):
    from ship.choose import named_variant
    for backend in BACKENDS:
        engine = {"openvino": "OpenVINO", "ctranslate2": "CTranslate2"}[backend.split("-")[0]]
        with pytest.raises(UserError, match=rf"teacher/{backend} runs only inside the harness \(it needs {engine};"
                                            r".*packageable: teacher/onnx"):
            named_variant(read_manifest(run.dir), f"teacher/{backend}")


def test_the_other_tests_leave_them_out():
    from tests.conftest import TINY_OVERRIDES
    skipped = json.loads(next(o for o in TINY_OVERRIDES if o.startswith("export.skip=")).split("=", 1)[1])
    assert {f"transformer/{b}" for engine in ENGINES.values() for b in engine[1]} <= set(skipped)


@pytest.mark.skipif("openvino" not in INSTALLED, reason="openvino is not installed")
def test_the_int8_study_keeps_the_ffn_layers_it_names_in_fp32(run, exported, tmp_path):
    """scripts/openvino_int8_study.py: each recipe quantised by the backend's own path, the FFN down-projections it
    names left unquantised (their input is fed by no FakeQuantize), scored and timed beside fp32."""
    import openvino as ov
    from transformers import AutoTokenizer

    from distill.families.openvino import MODEL_XML, ffn_down_projections, quantize_ir
    from scripts.openvino_int8_study import main
    export = run.dir / "export" / "teacher" / "openvino"
    xml = export / MODEL_XML
    down = ffn_down_projections(xml)
    assert len(down) == json.loads((export / "config.json").read_text())["num_hidden_layers"]

    def quantised_inputs(written):
        ops = {op.get_friendly_name(): op for op in ov.Core().read_model(str(written)).get_ordered_ops()}
        return [ops[name].input_value(0).get_node().get_type_name() == "FakeQuantize" for name in down]

    texts = datasets.texts_labels(run.split(), "train")[0][:16]
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert all(quantised_inputs(quantize_ir(xml, tokenizer, texts, tmp_path / "all.xml")))
    kept = quantize_ir(xml, tokenizer, texts, tmp_path / "kept.xml", (down[0],))
    assert quantised_inputs(kept) == [False] + [True] * (len(down) - 1)

    table = tmp_path / "recipes.csv"
    assert main([str(export), "--split", str(run.dir / "data" / "split.parquet"), "--recipe", "16",
                 "--recipe", "16:ffn-down=0", "--timing-texts", "4", "--passes", "1", "--csv", str(table)]) == 0
    rows = {r["recipe"]: r for r in pd.read_csv(table, keep_default_na=False).to_dict("records")}
    assert list(rows) == ["fp32", "16", "16:ffn-down=0"]
    assert rows["fp32"]["agreement_with_fp32"] == 1.0
    assert rows["16:ffn-down=0"]["fp32_ffn_down"] == "layers 0" and rows["16"]["calibration_texts"] == "16"
    assert all(0 < r["batch1_model_ms_median"] and 0 <= r["test_accuracy"] <= 1 for r in rows.values())
    assert main([str(export), "--split", str(run.dir / "data" / "split.parquet"),
                 "--recipe", f"16:ffn-down={len(down)}"]) == 2   # no such layer: one error line


@pytest.mark.skipif("openvino" not in INSTALLED, reason="openvino is not installed")
def test_calibration_texts_is_how_many_training_texts_openvino_int8_calibrates_on(run, exported, monkeypatch):
    """[export] calibration_texts: NNCF observes OpenVINO int8's activation ranges on all of them, so a new count
    re-exports it on that many; ONNX Runtime int8 reads only the first CALIBRATION_TEXTS, so its export stays cached.
    (Last in this module: it replaces the run's OpenVINO int8 export.)"""
    backends = FAMILIES["transformer"].backends
    calibrated_on = {}
    for name in ("openvino-int8", "onnx-int8"):
        def spy(source, out, sample_texts, real=backends[name].export, name=name):
            calibrated_on[name] = len(sample_texts)
            return real(source, out, sample_texts)
        monkeypatch.setitem(backends, name, dataclasses.replace(backends[name], export=spy))
    quiet = dict(models_filter=["teacher"], log=lambda *_: None, progress=False)
    export_all(run, backends_filter=["onnx-int8"], **quiet)
    n_train = len(datasets.texts_labels(run.split(), "train")[0])
    assert n_train > CALIBRATION_TEXTS
    cfg = apply_overrides(run.cfg, [f"export.calibration_texts={n_train}"])
    recalibrated = Run(run.profile, cfg, run.dir.parent, run.reports.parent, progress=False, log=lambda *_: None)
    calibrated_on.clear()
    entries = export_all(recalibrated, backends_filter=["onnx-int8", "openvino-int8"], **quiet)
    assert all(e["status"] == "ok" for e in entries), entries
    assert calibrated_on == {"openvino-int8": n_train}
    calibrated_on.clear()
    export_all(recalibrated, backends_filter=["openvino-int8"], **quiet)
    assert calibrated_on == {}   # cached under the new count
