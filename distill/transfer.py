"""The transfer set: augmented training sentences (and optional unlabelled in-domain text) with the teacher's logits.

A cached stage, artifacts/<profile>/transfer/transfer.parquet (columns text, source, logit_0..). Labelling is the
slow part, so it runs in chunks that are saved as they finish under artifacts/<profile>/.transfer.partial/; an
interrupted build resumes from there and loses at most the chunk in flight. The partial files are removed once the
stage is complete. With `[labelling] engine = "ray"` the same directory holds Ray's finished shards instead
(distill/ray_labelling.py).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import augment
from .atomic import atomic_path, write_json
from .config import fingerprint
from .errors import UserError

PARTIAL = ".transfer.partial"


def read_unlabelled(path: str, column: str = "text") -> list[str]:
    """One text per line, or the `column` of a CSV; blank lines are skipped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"unlabelled text file {path} does not exist; set transfer.unlabelled to a file with one "
                        "text per line, or to \"\" for none")
    if file.suffix.lower() == ".csv":
        from .data import read_csv_column
        lines = [text.strip() for text in read_csv_column(file, column)]
        return [line for line in lines if line]
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise UserError(f"unlabelled text file {path} is not UTF-8 text") from None
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"unlabelled text file {path} holds no text; give one text per line")
    return lines


def file_stamp(path: str):
    """Path, size and mtime: editing the file invalidates the stage."""
    if not path:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        return str(path)
    stat = file.stat()
    return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]


def transfer_texts(split: pd.DataFrame, c: dict, mask_token: str, text_col: str = "text") -> pd.DataFrame:
    """The texts to label (columns text, source = augmented | unlabelled), deduplicated, without any text of the
    split itself: train texts are already in the training set, and dev/test texts must not leak into training."""
    train = split.loc[split["split"] == "train", "text"].tolist()
    held_out = split.loc[split["split"] != "train", "text"].tolist()
    neighbours = {}
    if c["p_sub"] > 0 and c["n_iter"] > 0:
        vocabulary = {w for t in train for w in augment.words(t)}
        neighbours = augment.glove_neighbours(vocabulary, c["top_k"], c["glove_vocab"])
    texts = augment.augment(train, c["n_iter"], neighbours, c["p_mask"], c["p_sub"], c["p_ng"], c["max_ngram"],
                            mask_token, c["seed"], exclude=held_out)
    if c["max_size"] and len(texts) > c["max_size"]:
        keep = np.sort(np.random.default_rng(c["seed"]).choice(len(texts), c["max_size"], replace=False))
        texts = [texts[i] for i in keep]
    frame = pd.DataFrame({"text": texts, "source": "augmented"})
    if c["unlabelled"]:
        known = {augment.normalise(t) for t in split["text"]} | {augment.normalise(t) for t in texts}
        extra = []
        for line in read_unlabelled(c["unlabelled"], c.get("unlabelled_col") or text_col):
            key = augment.normalise(line)
            if key not in known:
                known.add(key)
                extra.append(line)
        frame = pd.concat([frame, pd.DataFrame({"text": extra, "source": "unlabelled"})], ignore_index=True)
    if frame.empty:
        raise UserError("the transfer set is empty; raise transfer.n_iter or give transfer.unlabelled a file")
    return frame


def label_in_chunks(texts: list[str], label, partial: Path, key: str, chunk_size: int, progress=True):
    """`label(texts) -> logits`, chunk by chunk; each finished chunk is saved under `partial` (for this `key` and
    these texts) and reused by a later call. Returns (logits, seconds spent labelling, chunks reused)."""
    if chunk_size < 1:
        raise UserError(f"transfer.chunk_size must be at least 1, got {chunk_size}")
    identity = {"key": key, "texts": fingerprint(texts), "chunk_size": chunk_size}
    meta_path = partial / "meta.json"
    try:
        current = json.loads(meta_path.read_text()) if meta_path.exists() else None
    except (OSError, ValueError):
        current = None
    if current != identity:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_json(meta_path, identity)
    parts, seconds, reused = [], 0.0, 0
    bar = tqdm(total=len(texts), desc="transfer labels", unit="text", disable=not progress)
    for number, start in enumerate(range(0, len(texts), chunk_size)):
        chunk = texts[start:start + chunk_size]
        path = partial / f"chunk-{number:05d}.npz"
        saved = _load_chunk(path, len(chunk))
        if saved is None:
            started = time.time()
            logits = np.asarray(label(chunk), dtype=np.float32)
            saved = (logits, time.time() - started)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, logits=logits, seconds=saved[1])
        else:
            reused += 1
        parts.append(saved[0])
        seconds += saved[1]
        bar.update(len(chunk))
        bar.set_postfix(texts_per_s=f"{(start + len(chunk)) / max(seconds, 1e-9):.0f}")
    bar.close()
    return np.concatenate(parts), seconds, reused


def _load_chunk(path: Path, rows: int):
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            logits, seconds = saved["logits"], float(saved["seconds"])
    except Exception:  # a chunk cut short by a crash: label it again
        return None
    return (logits, seconds) if len(logits) == rows else None


def build(run) -> None:
    """The `transfer` stage of `run` (a pipeline.Run)."""
    c = run.cfg["transfer"]
    augment.check_probabilities(c["p_mask"], c["p_sub"], c["p_ng"], c["max_ngram"], c["n_iter"])
    inputs = {"transfer": c, "teacher": run.key("teacher"), "labeller": run.key("labeller"), "data": run.key("data"),
              "unlabelled": file_stamp(c["unlabelled"])}
    partial = run.dir / PARTIAL

    def build_stage(tmp):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(run.teacher_dir())
        started = time.time()
        frame = transfer_texts(run.split(), c, tokenizer.mask_token or tokenizer.unk_token or "[MASK]",
                               run.cfg["data"].get("text_col", "text"))
        augment_seconds = time.time() - started
        texts, label, lab = frame["text"].tolist(), run.labeller(), run.cfg["labelling"]
        engine = lab["engine"]
        if engine == "ray":
            from .ray_labelling import label_in_shards
            shards = run.partial_dir("transfer", fingerprint(inputs, lab["shard_size"]))   # = `partial`
            logits, seconds, reused = label_in_shards(texts, label, shards, lab, run.progress, run.log)
        else:
            logits, seconds, reused = label_in_chunks(texts, label, partial, fingerprint(inputs), c["chunk_size"],
                                                      run.progress)
        for k in range(logits.shape[1]):
            frame[f"logit_{k}"] = logits[:, k]
        frame.to_parquet(tmp / "transfer.parquet", index=False)
        counts = frame["source"].value_counts().to_dict()
        return {"rows": len(frame), "augmented": int(counts.get("augmented", 0)),
                "unlabelled": int(counts.get("unlabelled", 0)), "augment_seconds": round(augment_seconds, 2),
                "label_seconds": round(seconds, 2), "texts_per_second": round(len(frame) / max(seconds, 1e-9), 1),
                "chunks_reused": reused, "engine": engine,
                "logits_source": run.logits_source() + (" on Ray Data" if engine == "ray" else "")}

    _, info = run.stage("transfer", inputs, build_stage)
    shutil.rmtree(partial, ignore_errors=True)
    run.log(f"  transfer: {info['rows']:,} texts ({info['augmented']:,} augmented, {info['unlabelled']:,} "
            f"unlabelled), labelled in {info['label_seconds']:.0f}s ({info['texts_per_second']:.0f} texts/s)")
