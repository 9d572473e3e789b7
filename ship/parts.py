"""What a package holds of one model, family by family: its files, and the spec the runtime reads them by.

Each writer `write(source, folder) -> spec` puts one model's files into `folder` (a `PackageFolder`; an ensemble gives
each member its own subfolder) and returns the runtime's description of them (a `kind` of ship/runtime/predict.py's
RUNNERS, file names, the text settings). Files come from the variant's validated export; a native numpy model (the
static student) is written from its fitted arrays. A (family, backend) that is not in WRITERS needs an engine the
package runtime does not carry (PyTorch, scikit-learn, OpenVINO, CTranslate2) and cannot be packaged.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import UserError
from distill.families import FAMILIES
from distill.families.exporters import STUDENT_ORT_THREADS
from distill.students.bilstm import PAD, TOKEN, UNK
from distill.teacher_onnx import hf_dir

ALL_CORES = 0   # ONNX Runtime's own choice: one thread per physical core (a transformer gains from them)


@dataclass(frozen=True)
class Source:
    """One variant to package: where its files and fitted arrays come from."""
    model: str
    family: str
    backend: str
    estimator: object              # the fitted student; None for the teacher
    export_dir: Path | None        # the validated export; None for a native variant
    hf_source: Path | None         # the teacher's model directory (None: the student's own model)
    max_length: int


class PackageFolder:
    """Writes files under `root/prefix` and answers the names the runtime will find them by (`prefix` included)."""

    def __init__(self, root: Path, prefix: str = ""):
        self.root, self.prefix = Path(root), prefix

    def member(self, name: str) -> "PackageFolder":
        return PackageFolder(self.root, f"{self.prefix}{name}/")

    def _target(self, name: str) -> tuple[str, Path]:
        target = self.root / self.prefix / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return self.prefix + name, target

    def copy(self, path: Path, name: str | None = None) -> str:
        packaged, target = self._target(name or path.name)
        shutil.copyfile(path, target)   # contents only: an artifact's permission bits stay behind
        return packaged

    def write_text(self, name: str, text: str) -> str:
        packaged, target = self._target(name)
        target.write_text(text, encoding="utf-8")
        return packaged

    def write_json(self, name: str, obj) -> str:
        return self.write_text(name, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")

    def savez(self, name: str, **arrays) -> str:
        packaged, target = self._target(name)
        with open(target, "wb") as f:
            np.savez(f, **{key: np.asarray(value) for key, value in arrays.items()})
        return packaged


def only_onnx_file(directory: Path) -> Path:
    files = sorted(directory.glob("*.onnx"))
    if len(files) != 1:
        raise UserError(f"{directory} holds {len(files)} .onnx files, expected one; rerun `mbtb export` for it")
    return files[0]


# --- writers ---------------------------------------------------------------------------------------------------
def tfidf_numpy(source: Source, folder: PackageFolder) -> dict:
    return {"kind": "tfidf-numpy", "analyzer": folder.copy(source.export_dir / "analyzer.json"),
            "arrays": folder.copy(source.export_dir / "linear.npz")}


def tfidf_onnx(source: Source, folder: PackageFolder) -> dict:
    return {"kind": "tfidf-onnx", "model": folder.copy(source.export_dir / "model.onnx"),
            "threads": STUDENT_ORT_THREADS}


def static_tokenizer(source: Source, folder: PackageFolder) -> dict:
    estimator = source.estimator
    return {"tokenizer": folder.write_text("tokenizer.json", estimator.tokenizer_json_),
            "max_length": estimator.max_length}


def static_numpy(source: Source, folder: PackageFolder) -> dict:
    estimator = source.estimator
    return {"kind": "static-numpy", "arrays": folder.savez("static.npz", table=estimator.table_, bias=estimator.bias_),
            **static_tokenizer(source, folder)}


def static_onnx(source: Source, folder: PackageFolder) -> dict:
    return {"kind": "static-onnx", "model": folder.copy(source.export_dir / "model.onnx"),
            "threads": STUDENT_ORT_THREADS, **static_tokenizer(source, folder)}


def bilstm_onnx(source: Source, folder: PackageFolder) -> dict:
    estimator = source.estimator
    return {"kind": "bilstm-onnx", "model": folder.copy(only_onnx_file(source.export_dir)),
            "vocabulary": folder.write_json("vocabulary.json", estimator.vocab_), "token_pattern": TOKEN.pattern,
            "max_length": estimator.max_length, "pad_id": PAD, "unk_id": UNK, "threads": STUDENT_ORT_THREADS}


def transformer_onnx(source: Source, folder: PackageFolder) -> dict:
    """A Hugging Face model directory `hf/`: the export's config, tokenizer and ONNX graph (what optimum's
    ORTModelForSequenceClassification loads) plus the PyTorch weights as safetensors (what transformers.pipeline
    loads). The runtime reads the ONNX graph and tokenizer.json, with the padding and truncation of the export's
    tokenizer."""
    from transformers import AutoTokenizer
    hf = folder.member("hf")
    if not (source.export_dir / "tokenizer.json").exists():
        raise UserError(f"{source.export_dir} has no tokenizer.json (a slow tokenizer); the runtime needs a fast one")
    for path in sorted(source.export_dir.iterdir()):
        if path.is_file() and path.name != "stage.json":
            hf.copy(path)
    write_safetensors(source, hf)
    tokenizer = AutoTokenizer.from_pretrained(source.export_dir)
    return {"kind": "transformer-onnx", "model": hf.prefix + only_onnx_file(source.export_dir).name,
            "tokenizer": hf.prefix + "tokenizer.json", "max_length": source.max_length,
            "pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token,
            "pad_type_id": tokenizer.pad_token_type_id, "padding_side": tokenizer.padding_side,
            "truncation_side": tokenizer.truncation_side, "threads": ALL_CORES}


def write_safetensors(source: Source, hf: PackageFolder) -> None:
    """The model's weights as safetensors (a checkpoint saved as pytorch_model.bin is converted, never copied)."""
    with hf_dir(source.hf_source or source.estimator) as model_dir:
        weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.safetensors.index.json"))
        if weights:
            for path in weights:
                hf.copy(path)
            return
        from transformers import AutoModelForSequenceClassification
        with tempfile.TemporaryDirectory(prefix="package-weights-") as tmp:
            AutoModelForSequenceClassification.from_pretrained(model_dir).save_pretrained(tmp, safe_serialization=True)
            for path in sorted(Path(tmp).glob("*.safetensors*")):
                hf.copy(path)


def ensemble_exported(source: Source, folder: PackageFolder) -> dict:
    """Each member in the backend its `exported` variant runs it in (members.json), in a folder of its own."""
    fitted = dict(source.estimator.estimators_)
    members = []
    for listed in json.loads((source.export_dir / "members.json").read_text()):
        model, family, backend = listed["model"], listed["family"], listed["backend"]
        estimator = fitted[model]
        native = backend == FAMILIES[family].native_backend
        member = Source(model, family, backend, estimator, None if native else source.export_dir / model, None,
                        getattr(estimator, "max_length", None) or source.max_length)
        members.append(write_part(member, folder.member(model)))
    return {"kind": "ensemble", "members": members}


WRITERS = {
    ("sklearn", "numpy"): tfidf_numpy,
    ("sklearn", "onnx"): tfidf_onnx,
    ("static", "numpy"): static_numpy,
    ("static", "onnx"): static_onnx,
    ("bilstm", "onnx"): bilstm_onnx,
    ("bilstm", "onnx-int8"): bilstm_onnx,
    ("cnn", "onnx"): bilstm_onnx,         # the same words-to-ids runtime: only the network in the ONNX file differs
    ("cnn", "onnx-int8"): bilstm_onnx,
    ("transformer", "onnx"): transformer_onnx,
    ("transformer", "ort-opt"): transformer_onnx,
    ("transformer", "onnx-int8"): transformer_onnx,
    ("ensemble", "exported"): ensemble_exported,
}

# What each kind of runtime model imports besides the standard library.
NEEDS = {"tfidf-numpy": ("numpy",), "tfidf-onnx": ("numpy", "onnxruntime"), "static-numpy": ("numpy", "tokenizers"),
         "static-onnx": ("numpy", "onnxruntime", "tokenizers"), "bilstm-onnx": ("numpy", "onnxruntime"),
         "transformer-onnx": ("numpy", "onnxruntime", "tokenizers"), "ensemble": ("numpy",)}


# the engine a backend that cannot be packaged runs on, by the backend's first word
HARNESS_ENGINES = {"torch": "PyTorch", "torchscript": "PyTorch", "sklearn": "scikit-learn", "native": "its members' "
                   "PyTorch or scikit-learn", "openvino": "OpenVINO", "ctranslate2": "CTranslate2"}


def packageable(family: str, backend: str) -> bool:
    return (family, backend) in WRITERS


def why_harness_only(backend: str) -> str:
    """Why a backend's export cannot leave the harness: the engine it needs, which the package runtime lacks."""
    engine = HARNESS_ENGINES.get(backend.split("-")[0], "an engine")
    return f"it needs {engine}; a package runs on ONNX Runtime and numpy only"


def write_part(source: Source, folder: PackageFolder) -> dict:
    writer = WRITERS.get((source.family, source.backend))
    if writer is None:
        raise UserError(f"{source.model}/{source.backend} runs only inside the harness "
                        f"({why_harness_only(source.backend)}); package another of its exports instead")
    return writer(source, folder)


def kinds(spec: dict) -> list[str]:
    """The runtime kinds a spec uses, its ensemble members' included."""
    return [spec["kind"], *(kind for member in spec.get("members", []) for kind in kinds(member))]


def needed_libraries(spec: dict) -> list[str]:
    return sorted({library for kind in kinds(spec) for library in NEEDS[kind]})


def needs_word_cache(spec: dict) -> bool:
    return any(kind.startswith("static-") for kind in kinds(spec))
