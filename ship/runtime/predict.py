"""A packaged text classifier (made by `mbtb package`), run with numpy, onnxruntime and tokenizers alone.

    from predict import Classifier                     # with this folder on sys.path
    model = Classifier.load("path/to/package")
    model.predict_proba(["a gripping, funny film"])    # (texts, classes) probabilities, columns in model.labels order
    model.predict(["a gripping, funny film"])          # label names

    python predict.py "a gripping, funny film"         # one JSON line per text; no texts: one text per stdin line
    python predict.py --csv reviews.csv --text-col text > scored.csv

Safe to load: every file listed in manifest.json is checked against its sha256 before anything is read, and only
listed files are read. Weights are ONNX or .npz (read with allow_pickle=False), the rest JSON or a tokenizer's JSON:
no model file is unpickled or imported. (The one module this file imports from beside itself, wordpiece_cache.py,
is part of the runtime, checked like the rest when the package loaded is this file's own folder.)
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

FORMAT = "mbtb-package/1"
MANIFEST = "manifest.json"
CLI_BATCH = 64   # the benchmark scores in batches of 64 too (bench/export.py SCORING_BATCH)


class PackageError(Exception):
    """A package that cannot be loaded; the message names the file and the fix."""


# --- the manifest ----------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digests(directory) -> dict[str, str]:
    """sha256 of every file under `directory` but the manifest itself: what manifest.json lists."""
    directory = Path(directory)
    return {path.relative_to(directory).as_posix(): sha256_of(path) for path in sorted(directory.rglob("*"))
            if path.is_file() and path.name != MANIFEST and "__pycache__" not in path.parts}


class Files:
    """The files of a package, all checked against manifest.json on creation; only listed files can be opened."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.listed = self._read_manifest()
        for name, expected in self.listed.items():
            path = self.directory / name
            if not path.is_file():
                raise PackageError(f"{path} is missing; restore it or rebuild the package with `mbtb package`")
            if sha256_of(path) != expected:
                raise PackageError(f"{path} does not match its sha256 in {MANIFEST} (changed since it was packaged); "
                                   "restore it or rebuild the package with `mbtb package`")

    def _read_manifest(self) -> dict[str, str]:
        path = self.directory / MANIFEST
        if not path.is_file():
            raise PackageError(f"{self.directory} is not a package (no {MANIFEST}); make one with "
                               "`mbtb package MODEL/BACKEND`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            listed = manifest["files"] if manifest.get("format") == FORMAT else None
        except (ValueError, KeyError, AttributeError):
            listed = None
        if not isinstance(listed, dict) or any(".." in Path(name).parts or Path(name).is_absolute() for name in listed):
            raise PackageError(f"{path} is not a {FORMAT} manifest; rebuild the package with `mbtb package`")
        return listed

    def path(self, name: str) -> Path:
        if name not in self.listed:
            raise PackageError(f"{self.directory / name} is not listed in {MANIFEST}; rebuild the package")
        return self.directory / name

    def text(self, name: str) -> str:
        return self.path(name).read_text(encoding="utf-8")

    def json(self, name: str):
        return json.loads(self.text(name))

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path(name), allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def onnx_session(path: Path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads    # 0: one per physical core
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits_to_probabilities(outputs: list) -> np.ndarray:
    return softmax(np.asarray(outputs[0], dtype=np.float64))


# --- one runner per kind of model: prepare(texts) -> model input, run(input) -> probabilities (float64) ------------
class TfidfLinear:
    """TF-IDF features (scikit-learn's word n-gram analyzer, l2-normalised) into softmax(x @ weights + bias)."""

    def __init__(self, files: Files, spec: dict, threads: int):
        settings = files.json(spec["analyzer"])
        arrays = files.arrays(spec["arrays"])
        self.idf, self.weights, self.bias = arrays["idf"], arrays["weights"], arrays["bias"]
        self.vocabulary = {term: i for i, term in enumerate(settings["terms"])}
        self.sublinear_tf = settings["sublinear_tf"]
        self.lowercase = settings["lowercase"]
        self.token = re.compile(settings["token_pattern"])
        self.ngram_range = tuple(settings["ngram_range"])

    def terms(self, text: str) -> list[str]:
        """scikit-learn's `build_analyzer()` for word n-grams: the n-grams of each length in turn, shortest first."""
        tokens = self.token.findall(text.lower() if self.lowercase else text)
        low, high = self.ngram_range
        grams = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            grams += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        return grams

    def prepare(self, texts):
        rows = []
        for text in texts:
            counts = Counter(i for i in map(self.vocabulary.get, self.terms(text)) if i is not None)
            index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (1.0 + np.log(tf) if self.sublinear_tf else tf) * self.idf[index]
            norm = np.sqrt(values @ values)
            rows.append((index, values / norm if norm else values))
        return rows

    def run(self, rows):
        return softmax(np.stack([values @ self.weights[index] for index, values in rows]) + self.bias)


class TfidfOnnx:
    """The scikit-learn pipeline as one ONNX graph over raw strings (skl2onnx)."""

    def __init__(self, files: Files, spec: dict, threads: int):
        self.session = onnx_session(files.path(spec["model"]), threads)
        self.outputs_probabilities = len(self.session.get_outputs()) > 1   # classifiers; ridge gives scores only

    def prepare(self, texts):
        return {"text": np.array(texts, dtype=object)[:, None]}

    def run(self, feeds):
        outputs = self.session.run(None, feeds)
        if self.outputs_probabilities:
            return np.asarray(outputs[-1], dtype=np.float64)
        return onnx_logits_to_probabilities(outputs)


def word_piece_cache_class():
    """The static student's exact fast tokenizer: wordpiece_cache.py beside this file in a package (a copy of the
    harness's distill/students/wordpiece_cache.py), or the harness's own module when this file runs inside it."""
    beside = Path(__file__).with_name("wordpiece_cache.py")
    if not beside.is_file():
        from distill.students.wordpiece_cache import WordPieceCache
        return WordPieceCache
    import importlib.util
    spec = importlib.util.spec_from_file_location("wordpiece_cache", beside)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WordPieceCache


class StaticTokens:
    """The static student's token ids: the Model2Vec tokenizer, through its exact word cache where it applies."""

    def __init__(self, files: Files, spec: dict):
        from tokenizers import Tokenizer
        tokenizer_json = files.text(spec["tokenizer"])
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(spec["max_length"])
        cache = word_piece_cache_class()
        self.cache = cache(self.tokenizer, spec["max_length"]) if cache.supports(tokenizer_json) else None

    def __call__(self, texts) -> list[np.ndarray]:
        if self.cache is not None:
            return [np.asarray(self.cache.ids(text), dtype=np.int64) for text in texts]
        encodings = [self.tokenizer.encode(texts[0], add_special_tokens=False)] if len(texts) == 1 else \
            self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


class StaticTable:
    """Static embeddings with the head folded in: logits = mean of the token rows of `table` + bias."""

    def __init__(self, files: Files, spec: dict, threads: int):
        self.token_ids = StaticTokens(files, spec)
        arrays = files.arrays(spec["arrays"])
        self.table, self.bias = arrays["table"], arrays["bias"]

    def prepare(self, texts):
        return self.token_ids(texts)

    def run(self, ids):
        logits = np.zeros((len(ids), len(self.bias)), dtype=np.float32)
        for i, row in enumerate(ids):
            if len(row):
                logits[i] = self.table.take(row, axis=0).sum(axis=0) / len(row)
        return softmax((logits + self.bias).astype(np.float64))


class StaticOnnx:
    """The same static student as an ONNX graph over padded ids and a mask."""

    def __init__(self, files: Files, spec: dict, threads: int):
        self.token_ids = StaticTokens(files, spec)
        self.session = onnx_session(files.path(spec["model"]), threads)

    def prepare(self, texts):
        ids = self.token_ids(texts)
        padded = np.zeros((len(ids), max(1, max(map(len, ids), default=1))), dtype=np.int64)
        mask = np.zeros(padded.shape, dtype=np.float32)
        for i, row in enumerate(ids):
            padded[i, :len(row)], mask[i, :len(row)] = row, 1.0
        return {"input_ids": padded, "mask": mask}

    def run(self, feeds):
        return onnx_logits_to_probabilities(self.session.run(None, feeds))


class BiLSTMOnnx:
    """The BiLSTM student in ONNX: lower-cased word tokens looked up in its vocabulary, padded with `pad_id`."""

    def __init__(self, files: Files, spec: dict, threads: int):
        self.vocabulary = files.json(spec["vocabulary"])
        self.token = re.compile(spec["token_pattern"])
        self.max_length, self.pad_id, self.unk_id = spec["max_length"], spec["pad_id"], spec["unk_id"]
        self.session = onnx_session(files.path(spec["model"]), threads)

    def prepare(self, texts):
        rows = [[self.vocabulary.get(t, self.unk_id) for t in self.token.findall(text.lower())][:self.max_length]
                or [self.unk_id] for text in texts]
        ids = np.full((len(rows), max(map(len, rows))), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
        return {"input_ids": ids}

    def run(self, feeds):
        return onnx_logits_to_probabilities(self.session.run(None, feeds))


class TransformerOnnx:
    """A Hugging Face sequence classifier in ONNX, its text encoded by its own tokenizer.json as `transformers`
    does it (truncation to `max_length`, padding to the longest text of the batch)."""

    def __init__(self, files: Files, spec: dict, threads: int):
        from tokenizers import Tokenizer
        self.tokenizer = Tokenizer.from_str(files.text(spec["tokenizer"]))
        self.tokenizer.enable_truncation(spec["max_length"], stride=0, strategy="longest_first",
                                         direction=spec["truncation_side"])
        self.tokenizer.enable_padding(direction=spec["padding_side"], pad_id=spec["pad_id"],
                                      pad_type_id=spec["pad_type_id"], pad_token=spec["pad_token"])
        self.session = onnx_session(files.path(spec["model"]), threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def prepare(self, texts):
        # encode_batch's thread pool costs more than it saves on one text; the ids are the same
        encodings = [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(texts)
        columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        return {name: np.array([getattr(e, field) for e in encodings], dtype=np.int64)
                for name, field in columns.items() if name in self.inputs}

    def run(self, feeds):
        return onnx_logits_to_probabilities(self.session.run(None, feeds))


class Ensemble:
    """The mean of its members' probabilities (each member reads the text its own way)."""

    def __init__(self, files: Files, spec: dict, threads: int):
        self.members = [runner(files, member, threads) for member in spec["members"]]

    def prepare(self, texts):
        return [member.prepare(texts) for member in self.members]

    def run(self, prepared):
        return np.mean([member.run(p) for member, p in zip(self.members, prepared)], axis=0)


RUNNERS = {"tfidf-numpy": TfidfLinear, "tfidf-onnx": TfidfOnnx, "static-numpy": StaticTable,
           "static-onnx": StaticOnnx, "bilstm-onnx": BiLSTMOnnx, "transformer-onnx": TransformerOnnx,
           "ensemble": Ensemble}


def runner(files: Files, spec: dict, threads: int | None):
    if spec.get("kind") not in RUNNERS:
        raise PackageError(f"{files.directory}: unknown model kind {spec.get('kind')!r}; this predict.py runs "
                           f"{', '.join(RUNNERS)} (use the predict.py of the package)")
    return RUNNERS[spec["kind"]](files, spec, spec.get("threads", 1) if threads is None else threads)


# --- the classifier --------------------------------------------------------------------------------------------
class Classifier:
    """`Classifier.load(directory)`: a package's model, checked against its manifest before anything is read."""

    def __init__(self, model, labels: list[str], info: dict):
        self.model, self.labels, self.info = model, labels, info

    @classmethod
    def load(cls, directory=Path(__file__).resolve().parent, threads: int | None = None) -> "Classifier":
        """`threads`: ONNX Runtime threads per call (default: the package's choice, 1 for small students)."""
        files = Files(directory)
        info = files.json("package.json")
        if info.get("format") != FORMAT:
            raise PackageError(f"{files.directory} is a package of format {info.get('format')!r}, not {FORMAT}")
        return cls(runner(files, info["runtime"], threads), files.json("labels.json"), info)

    def prepare(self, texts):
        return self.model.prepare(list(texts))

    def run(self, prepared) -> np.ndarray:
        return self.model.run(prepared)

    def predict_proba(self, texts) -> np.ndarray:
        texts = list(texts)
        return self.run(self.prepare(texts)) if texts else np.zeros((0, len(self.labels)))

    def predict(self, texts) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


# --- command line ----------------------------------------------------------------------------------------------
def predict_in_batches(model: Classifier, texts: list[str], size: int = CLI_BATCH) -> np.ndarray:
    """Probabilities of many texts, `size` at a time, each batch of texts of similar length (less padding), in
    input order. The benchmark's scoring batches the test split the same way, so an int8 model (whose activations
    are quantised per batch) gives here exactly the probabilities it was scored with."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(model.labels)))
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        out[rows] = model.predict_proba([texts[i] for i in rows])
    return out


def print_json_lines(model: Classifier, texts: list[str], out) -> None:
    for text, probabilities in zip(texts, predict_in_batches(model, texts)):
        out.write(json.dumps({"text": text, "label": model.labels[int(probabilities.argmax())],
                              "probabilities": dict(zip(model.labels, probabilities.tolist()))}) + "\n")


def write_scored_csv(model: Classifier, path: str, text_col: str, out) -> None:
    """The CSV back with `predicted_label` and one `probability_<label>` column per class."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and text_col not in rows[0]:
        raise PackageError(f"{path} has no column {text_col!r}; name the text column with --text-col")
    columns = list(rows[0]) if rows else [text_col]
    writer = csv.DictWriter(out, columns + ["predicted_label"] + [f"probability_{label}" for label in model.labels],
                            extrasaction="ignore")   # a row with more fields than the header keeps the header's
    writer.writeheader()
    for row, probabilities in zip(rows, predict_in_batches(model, [row[text_col] for row in rows])):
        row["predicted_label"] = model.labels[int(probabilities.argmax())]
        row.update({f"probability_{label}": repr(p) for label, p in zip(model.labels, probabilities.tolist())})
        writer.writerow(row)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="predict.py", description="Classify texts with this package's model.")
    p.add_argument("texts", nargs="*", help="texts to classify (none: one text per line on stdin)")
    p.add_argument("--package", default=str(Path(__file__).resolve().parent),
                   help="the package folder (default: the one this file is in)")
    p.add_argument("--csv", help="a UTF-8 CSV with a header row, written back to stdout with the predictions")
    p.add_argument("--text-col", default="text", help="the CSV's text column (default: %(default)s)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per call (default: the package's choice)")
    args = p.parse_args(argv)
    try:
        model = Classifier.load(args.package, args.threads)
        if args.csv:
            write_scored_csv(model, args.csv, args.text_col, sys.stdout)
        else:
            print_json_lines(model, args.texts or [line.rstrip("\n") for line in sys.stdin], sys.stdout)
    except (PackageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
