"""The transfer set: augmented training sentences (and optional unlabelled in-domain text) with the teacher's logits.

A cached stage, artifacts/<profile>/transfer/transfer.parquet (columns text, source, logit_0..). Labelling is the
slow part, so it runs in chunks that are saved as they finish under artifacts/<profile>/.transfer.partial/; an
interrupted build resumes from there and loses at most the chunk in flight (distill/chunked_labelling.py). The
partial files are removed once the stage is complete. With `[labelling] engine = "ray"` the same directory holds
Ray's finished shards instead (distill/ray_labelling.py); `labelling.label_texts` chooses. With `[labelling]
assistant` set, the accepted teacher assistant labels it (distill/assistant.py); `labelled_by` in the stage info says
who did.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import assistant, augment, labelling
from .config import fingerprint
from .errors import UserError
from .store import source_stamp


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


def transfer_inputs(run) -> dict:
    """What the `transfer` stage's key hashes (its settings are checked first, cached or not)."""
    c = run.cfg["transfer"]
    augment.check_probabilities(c["p_mask"], c["p_sub"], c["p_ng"], c["max_ngram"], c["n_iter"])
    inputs = {"transfer": c, "teacher": run.key("teacher"), "labeller": run.key("labeller"), "data": run.key("data"),
              "unlabelled": source_stamp(c["unlabelled"])}
    if assistant.enabled(run.cfg):   # only then: the key of a run without an assistant stays what it was
        inputs["assistant"] = run.key("assistant")
    return inputs


def build_transfer(run, tmp, inputs) -> dict:
    from transformers import AutoTokenizer
    c = run.cfg["transfer"]
    tokenizer = AutoTokenizer.from_pretrained(run.teacher_dir())
    started = time.time()
    frame = transfer_texts(run.split(), c, tokenizer.mask_token or tokenizer.unk_token or "[MASK]",
                           run.cfg["data"].get("text_col", "text"))
    augment_seconds = time.time() - started
    label, labelled_by, source = labeller_of(run)
    labelled = labelling.label_texts(run, label, frame["text"].tolist(), "transfer", fingerprint(inputs),
                                     c["chunk_size"])
    for k in range(labelled.logits.shape[1]):
        frame[f"logit_{k}"] = labelled.logits[:, k]
    frame.to_parquet(tmp / "transfer.parquet", index=False)
    counts = frame["source"].value_counts().to_dict()
    engine = run.cfg["labelling"]["engine"]
    return {"rows": len(frame), "augmented": int(counts.get("augmented", 0)),
            "unlabelled": int(counts.get("unlabelled", 0)), "augment_seconds": round(augment_seconds, 2),
            "label_seconds": round(labelled.seconds, 2),
            "texts_per_second": round(len(frame) / max(labelled.seconds, 1e-9), 1), "chunks_reused": labelled.reused,
            "engine": engine, "logits_source": source + (" on Ray Data" if engine == "ray" else ""),
            "labelled_by": labelled_by}


def labeller_of(run):
    """(label, labelled_by, logits source in words): the accepted teacher assistant, else the teacher's labeller."""
    label = assistant.labeller(run)
    if label is not None:
        chosen = run.stage_info("assistant")["chosen"]
        return label, {"model": chosen["model"], "backend": chosen["backend"]}, assistant.source_line(
            run.stage_info("assistant"))
    label = run.labeller()
    return label, {"model": "teacher", "backend": label.backend}, run.logits_source()


def labelled_by(info: dict) -> str:
    """Who labelled the transfer set, in words (a transfer set built before `labelled_by` was recorded: the
    teacher)."""
    who = info.get("labelled_by", {"model": "teacher"})
    return "the teacher" if who["model"] == "teacher" else f"the teacher assistant {who['model']} ({who['backend']})"


def transfer_done(run, info) -> None:
    run.log(f"  transfer: {info['rows']:,} texts ({info['augmented']:,} augmented, {info['unlabelled']:,} "
            f"unlabelled), labelled by {labelled_by(info)} in {info['label_seconds']:.0f}s "
            f"({info['texts_per_second']:.0f} texts/s)")
