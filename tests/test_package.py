"""Issue 29: `mbtb package` writes one validated variant as a folder that runs without the harness.

The run is tiny (tests/conftest.py's pipeline, 300 MR sentences, the teacher that answers differently for different
texts) with one student of each family in the distilled mode; each family's fastest variant (docs/results: TF-IDF in
numpy, static embeddings in numpy, the BiLSTM and the transformer in ONNX int8, the ensemble's `exported`) is
packaged, then run from a fresh virtual environment holding only its requirements.txt. A fake bench.json (timings
chosen here, every variant of the manifest) stands in for `mbtb bench` so the card and pick-for-me have latencies.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.export import export_all, predict_by_length
from bench.zoo import load_variant
from distill import data as datasets
from distill.errors import UserError
from distill.families import FAMILIES
from distill.families.manifest import Manifest, read_manifest
from distill.pipeline import Run
from ship.__main__ import main as package_main
from ship.choose import named_variant, packageable_names
from ship.runtime.predict import Classifier, PackageError
from tests.conftest import tiny_config
from tests.package_venv import fresh_venv, harness_modules_in, pip_install, pypi_unreachable

REPO = Path(__file__).resolve().parent.parent
FASTEST = {"sklearn": ("tfidf_lr-distilled", "numpy"), "static": ("static-distilled", "numpy"),
           "bilstm": ("bilstm-distilled", "onnx-int8"), "cnn": ("cnn-distilled", "onnx-int8"),
           "transformer": ("transformer-distilled", "onnx-int8"),
           "ensemble": ("ensemble-distilled", "exported")}
STUDENTS = ["tfidf_lr", "nb", "bilstm", "cnn", "static", "transformer"]
FP32 = 1e-6
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt")


@pytest.fixture(scope="module")
def run(tmp_path_factory, sensitive_teacher) -> Run:
    root = tmp_path_factory.mktemp("package-run")
    names = "[" + ", ".join(f'"{n}"' for n in STUDENTS) + "]"
    cfg = tiny_config(sensitive_teacher, ["teacher.lr=1e-5", 'students.bilstm.embedding="random"',
                                          'students.cnn.embedding="random"', "students.cnn.filters=8",
                                          "students.static.lr=0.1", f"students.names={names}",
                                          'students.modes=["distilled"]'])
    run = Run("tiny", cfg, root / "artifacts", root / "reports", progress=False, log=lambda *_: None)
    run.all()
    quiet = {"log": lambda *_: None, "progress": False}
    export_all(run, ["teacher"], backends_filter=["none"], **quiet)   # the teacher's scores, in PyTorch only
    export_all(run, [f"{s}-distilled" for s in STUDENTS] + ["ensemble-distilled"],
               backends_filter=["numpy", "onnx-int8", "exported"], **quiet)
    return run


@pytest.fixture(scope="module")
def manifest(run) -> Manifest:
    return read_manifest(run.dir)


def fake_bench(manifest: Manifest) -> dict:
    """bench.json as `mbtb bench` writes it, with made-up medians: the teacher 10 ms at batch 1, a student's
    exported variant a tenth of its native one, batch 32 eight times batch 1."""
    cases = []
    for e in [v.row() for v in manifest.ok()]:
        native = e["backend"] == FAMILIES[e["family"]].native_backend
        base = 10.0 if e["model"] == "teacher" else 2.0 * (1 + sum(map(ord, e["model"])) % 7) / 7
        median_ms = base if native else base / 10
        for batch_size, factor in ((1, 1), (32, 8)):
            cases.append({"stats": {"median": median_ms * factor / 1e3},
                          "extra_info": {"model": e["model"], "backend": e["backend"], "batch_size": batch_size,
                                         "mode": "e2e", "p90": median_ms * factor * 1.2 / 1e3}})
    return {"benchmarks": cases, "datetime": "2025-01-01T00:00:00", "machine_info": {
        "cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx2", "fma"],
        "threads": {"onnxruntime_intra_op": 2, "onnxruntime_intra_op_students": 1}}}


def artifact_state(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(run, *args) -> int:
    return package_main([*args, "--name", run.profile, "--artifacts", str(run.dir.parent),
                         "--reports", str(run.reports.parent)])


@pytest.fixture(scope="module")
def packaged(run, manifest, tmp_path_factory):
    """family -> its fastest variant's package folder; and the run's artifacts as they were before packaging."""
    run.reports.mkdir(parents=True, exist_ok=True)
    (run.reports / "bench.json").write_text(json.dumps(fake_bench(manifest)))
    before = artifact_state(run.dir)
    out = tmp_path_factory.mktemp("packages")
    folders = {}
    for family, (model, backend) in FASTEST.items():
        folders[family] = out / f"{model}-{backend}"
        assert cli(run, f"{model}/{backend}", "--out", str(folders[family])) == 0
    return folders, before


@pytest.fixture(scope="module")
def test_split(run):
    return datasets.texts_labels(run.split(), "test")


def entry_of(manifest, model, backend) -> dict:
    return next(v.row() for v in manifest.variants if (v.model, v.backend) == (model, backend))


# --- what a package holds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FASTEST)
def test_a_package_holds_the_model_the_runtime_requirements_card_and_checksums(packaged, family):
    folder = packaged[0][family]
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"predict.py", "package.json", "labels.json", "requirements.txt", "MODEL_CARD.md", "manifest.json"} <= names
    assert (folder / "predict.py").read_bytes() == (REPO / "ship" / "runtime" / "predict.py").read_bytes()
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    assert set(listed) == names - {"manifest.json"}
    assert all(len(digest) == 64 for digest in listed.values())
    pins = [line for line in (folder / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert pins and all("==" in pin for pin in pins)
    assert {pin.split("==")[0] for pin in pins} <= {"numpy", "onnxruntime", "tokenizers"}
    model_files = names - {"predict.py", "wordpiece_cache.py", "package.json", "labels.json", "requirements.txt",
                           "MODEL_CARD.md", "manifest.json"}
    assert model_files, "no model files"
    if family == "transformer":
        assert {"hf/config.json", "hf/model.safetensors", "hf/tokenizer.json", "hf/model_quantized.onnx"} <= names


def test_no_pickle_in_any_package(packaged):
    for folder in packaged[0].values():
        for path in (p for p in folder.rglob("*") if p.is_file()):
            assert path.suffix not in PICKLE_SUFFIXES, path
            head = path.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f"pickle: {path}"
            if path.suffix == ".npz":
                with zipfile.ZipFile(path) as zipped:
                    assert all(name.endswith(".npy") for name in zipped.namelist()), path
                with np.load(path, allow_pickle=False) as arrays:
                    assert all(arrays[key].dtype != object for key in arrays.files), path


def test_packaging_leaves_the_run_s_artifacts_as_they_were(run, packaged):
    assert artifact_state(run.dir) == packaged[1]


# --- the fresh virtual environment ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def venv_python(request, tmp_path_factory) -> Path:
    reason = pypi_unreachable()
    if reason:
        pytest.skip(reason)
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("package-venv") if cache is not None else tmp_path_factory.mktemp("package-venv")
    python = fresh_venv(Path(root))
    assert harness_modules_in(python) == [], "the package venv must hold neither the harness nor torch/sklearn"
    return python


@pytest.mark.parametrize("family", FASTEST)
def test_in_a_fresh_venv_the_package_gives_the_validated_export_s_probabilities_and_accuracy(
        run, manifest, packaged, test_split, venv_python, tmp_path, family):
    model, backend = FASTEST[family]
    folder = packaged[0][family]
    pip_install(venv_python, folder / "requirements.txt")
    assert harness_modules_in(venv_python) == []
    texts, gold = test_split
    with open(tmp_path / "test.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"], *zip(texts, gold)])
    done = subprocess.run([str(venv_python), str(folder / "predict.py"), "--csv", str(tmp_path / "test.csv")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(done.stdout.splitlines()))
    labels = run.labels()
    packaged_probs = np.array([[float(row[f"probability_{label}"]) for label in labels] for row in rows])
    exported = predict_by_length(load_variant(run, model, backend), texts)   # as bench/export.py scored it
    # 1e-6 for int8 too, tighter than the int8 tolerance: the package runs the export's own graph on the
    # same batches (int8 activations are quantised per batch), so only float rounding could differ (measured: 0).
    assert np.abs(packaged_probs - exported).max() <= FP32
    assert [row["predicted_label"] for row in rows] == [labels[i] for i in packaged_probs.argmax(axis=1)]
    accuracy = float(np.mean(packaged_probs.argmax(axis=1) == np.asarray(gold)))
    assert accuracy == entry_of(manifest, model, backend)["accuracy"]


def test_the_command_line_reads_texts_as_arguments_or_stdin_in_a_fresh_venv(packaged, venv_python, tmp_path):
    folder = packaged[0]["static"]
    pip_install(venv_python, folder / "requirements.txt")
    model = Classifier.load(folder)
    as_arguments = subprocess.run([str(venv_python), str(folder / "predict.py"), "a fine film", "a dull one"],
                                  capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    from_stdin = subprocess.run([str(venv_python), str(folder / "predict.py")], input="a fine film\na dull one\n",
                                capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert as_arguments == from_stdin
    lines = [json.loads(line) for line in as_arguments.splitlines()]
    expected = model.predict_proba(["a fine film", "a dull one"])
    for line, probabilities in zip(lines, expected):
        assert line["label"] == model.labels[int(probabilities.argmax())]
        assert list(line["probabilities"].values()) == pytest.approx(probabilities.tolist(), abs=FP32)


# --- the transformer's Hugging Face directory ----------------------------------------------------------------------
def test_the_hf_directory_loads_in_transformers_pipeline_and_optimum_with_the_same_labels(run, packaged, test_split):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline
    folder = packaged[0]["transformer"]
    texts = test_split[0]
    max_length = json.loads((folder / "package.json").read_text())["runtime"]["max_length"]
    classify = pipeline("text-classification", model=str(folder / "hf"), device="cpu")
    labels = [answer["label"] for answer in classify(texts, truncation=True, max_length=max_length)]
    source = load_variant(run, "transformer-distilled", "torch")   # the fp32 student the safetensors hold
    assert labels == [source.labels[i] for i in predict_by_length(source, texts).argmax(axis=1)]

    onnx = ORTModelForSequenceClassification.from_pretrained(str(folder / "hf"), file_name="model_quantized.onnx")
    tokenizer = AutoTokenizer.from_pretrained(folder / "hf")
    runtime = Classifier.load(folder)
    for text in texts:   # one at a time: int8 activations are quantised per batch
        logits = onnx(**tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")).logits
        assert runtime.labels[int(logits.argmax())] == runtime.predict([text])[0]


# --- refusals ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["package.json", "labels.json", "hf/model_quantized.onnx", "hf/tokenizer.json"])
def test_a_one_byte_edit_is_refused_before_anything_loads(packaged, tmp_path, capsys, name):
    folder = tmp_path / "package"
    shutil.copytree(packaged[0]["transformer"], folder)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(PackageError, match=f"{name}.* does not match its sha256"):
        Classifier.load(folder)
    from ship.runtime.predict import main as predict_main
    assert predict_main(["--package", str(folder), "a fine film"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and name in err[0]


def test_a_missing_file_and_a_missing_manifest_are_refused(packaged, tmp_path):
    folder = tmp_path / "package"
    shutil.copytree(packaged[0]["sklearn"], folder)
    (folder / "linear.npz").unlink()
    with pytest.raises(PackageError, match="linear.npz is missing"):
        Classifier.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(PackageError, match="not a package"):
        Classifier.load(folder)


def test_variants_that_do_not_exist_failed_or_need_the_harness_are_refused_naming_the_packageable(
        run, manifest, capsys, tmp_path):
    for name, problem in [("bilstm-distilled/tflite", "not a variant"), ("bilstm-distilled", "MODEL/BACKEND"),
                          ("bilstm-distilled/torch", "runs only inside the harness (it needs PyTorch;")]:
        assert cli(run, name, "--out", str(tmp_path / "refused")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and problem in err[0] and "packageable: " in err[0], err
        assert "bilstm-distilled/onnx-int8" in err[0]
    assert not (tmp_path / "refused").exists()
    failed = manifest.model_copy(update={"variants": [
        v.model_copy(update={"status": "failed", "error": "ExportDrift: too far"})
        if (v.model, v.backend) == ("static-distilled", "numpy") else v for v in manifest.variants]})
    with pytest.raises(UserError, match="failed its export .ExportDrift: too far.; packageable: ") as exc:
        named_variant(failed, "static-distilled/numpy")
    assert "static-distilled/numpy" not in str(exc.value).split("packageable: ")[1]
    assert "static-distilled/numpy" not in packageable_names(failed)


def test_out_replaces_an_earlier_package_but_never_another_folder(run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli(run, "tfidf_lr-distilled/numpy", "--out", str(foreign)) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"
    again = tmp_path / "again"
    assert cli(run, "tfidf_lr-distilled/numpy", "--out", str(again)) == 0
    assert cli(run, "nb-distilled/numpy", "--out", str(again)) == 0
    assert Classifier.load(again).info["model"] == "nb-distilled"


def test_mbtb_package_has_help_a_list_and_asks_for_one_choice(run, manifest, capsys):
    from mbtb.commands import main as mbtb
    assert mbtb(["--help"]) == 0 and "  package " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        mbtb(["package", "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage: mbtb package")
    assert cli(run, "--list") == 0
    assert capsys.readouterr().out.split() == packageable_names(manifest)
    for choices in ([], ["nb-distilled/numpy", "--max-drop", "1"]):
        assert cli(run, *choices) == 2
        assert "name one variant (MODEL/BACKEND), or give --budget-ms or --max-drop" in capsys.readouterr().err


# --- the model card and pick-for-me ------------------------------------------------------------------------------
def test_the_model_card_has_hugging_face_metadata_and_the_run_s_figures(run, manifest, packaged):
    from huggingface_hub import ModelCard
    folder = packaged[0]["bilstm"]
    entry = entry_of(manifest, *FASTEST["bilstm"])
    card = ModelCard.load(folder / "MODEL_CARD.md")
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.eval_results[0].metric_type == "accuracy"
    assert card.data.eval_results[0].metric_value == round(entry["accuracy"], 4)
    text = card.text
    for section in ("## Model Details", "## Uses", "## Bias, Risks, and Limitations", "## How to Get Started",
                    "## Training Details", "## Evaluation", "### Speeds, Sizes, Times"):
        assert section in text
    assert f"{entry['accuracy']:.1%} ({entry['ci_low']:.1%}-{entry['ci_high']:.1%})" in text
    assert f"{entry['agreement']:.1%}" in text                            # agreement with the teacher
    assert "teacher logits, train" in text and "loss=mse" in text        # the recipe
    bench_b1 = next(c for c in fake_bench(manifest)["benchmarks"] if c["extra_info"]["model"] == entry["model"]
                    and c["extra_info"]["backend"] == "onnx-int8" and c["extra_info"]["batch_size"] == 1)
    assert f"| 1 | {bench_b1['stats']['median'] * 1e3:.3f} |" in text   # batch-1 latency
    assert "| 32 |" in text and "| 10.00 |" in text and "| 80.00 |" in text   # batch 32; the teacher's own
    assert "Test CPU" in text and "avx2 fma" in text
    assert f"max |p - p_source| = {entry['max_abs_diff']:.3g}" in text and "max |p - p_export| = 0" in text
    assert "hf/" not in text and "`model_quantized.onnx`" in text and " MB in all" in text


@pytest.mark.parametrize("option, value", [("--budget-ms", "0.2"), ("--max-drop", "50")])
def test_pick_for_me_packages_its_choice_among_the_packageable_variants(run, manifest, packaged, tmp_path, capsys,
                                                                        option, value):
    assert cli(run, option, value, "--out", str(tmp_path / "picked")) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("pick: ")
    info = Classifier.load(tmp_path / "picked").info
    name = f"{info['model']}/{info['backend']}"
    assert name in printed and name in packageable_names(manifest)
    medians = {(c["extra_info"]["model"], c["extra_info"]["backend"]): c["stats"]["median"] * 1e3
               for c in fake_bench(manifest)["benchmarks"] if c["extra_info"]["batch_size"] == 1}
    candidates = {n: entry_of(manifest, *n.split("/")) for n in packageable_names(manifest)}
    mine = medians[(info["model"], info["backend"])]
    if option == "--budget-ms":
        assert mine <= float(value)
        assert all(e["score"] <= candidates[name]["score"] for n, e in candidates.items()
                   if medians[(e["model"], e["backend"])] <= float(value))
    else:
        assert all(medians[(e["model"], e["backend"])] >= mine for e in candidates.values())


# --- serve --package --------------------------------------------------------------------------------------------
def test_serve_package_serves_the_one_model_on_the_same_page_and_api(packaged):
    from fastapi.testclient import TestClient

    from serve import create_app
    from serve.__main__ import parser
    from serve.package import load_package
    folder = packaged[0]["ensemble"]
    assert parser().parse_args(["--package", str(folder)]).package == str(folder)
    loaded = load_package(folder, log=lambda *_: None)
    model = Classifier.load(folder)
    with TestClient(create_app(loaded.predictors, loaded.examples, loaded.labels, loaded.missing,
                               loaded.profile)) as client:
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["ensemble-distilled/exported"]
        answer = client.post("/predict", json={"text": "a fine film"}).json()["results"]
        assert len(answer) == 1
        assert answer[0]["probabilities"] == pytest.approx(model.predict_proba(["a fine film"])[0], abs=1e-6)
        assert client.get("/").status_code == 200


def test_serve_refuses_a_broken_package_with_one_line(packaged, tmp_path):
    from serve.package import load_package
    folder = tmp_path / "package"
    shutil.copytree(packaged[0]["sklearn"], folder)
    (folder / "labels.json").write_text('["a", "b"]')
    with pytest.raises(UserError, match="labels.json does not match its sha256"):
        load_package(folder)


def test_measure_times_predict_py_beside_the_benchmark_figure(run, manifest, packaged, capsys, tmp_path):
    from scripts import results_page
    from ship.measure import main as measure
    record = tmp_path / "packages" / "tfidf_lr-distilled-numpy.json"
    assert measure([str(packaged[0]["sklearn"]), "--name", run.profile, "--artifacts", str(run.dir.parent),
                    "--reports", str(run.reports.parent), "--seconds", "0.2", "--json", str(record)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    variant, files, size, load_ms, batch1_ms, benchmark_ms, difference = cells
    assert variant == "`tfidf_lr-distilled/numpy`" and int(files) >= 6 and size.endswith(" MB")
    saved = json.loads(record.read_text())
    assert saved["variant"] == "tfidf_lr-distilled/numpy" and saved["cpu_flags"] and saved["load_ms"] > 0
    assert results_page.writer(record.parent) is results_page.packages_page
    assert row in results_page.packages_page(record.parent)   # the results page is made from the saved files
    assert float(load_ms) > 0 and float(batch1_ms) > 0 and difference.endswith("%")
    bench = next(c for c in fake_bench(manifest)["benchmarks"] if c["extra_info"]["model"] == "tfidf_lr-distilled"
                 and c["extra_info"]["backend"] == "numpy" and c["extra_info"]["batch_size"] == 1)
    assert benchmark_ms == f"{bench['stats']['median'] * 1e3:.4f}"
