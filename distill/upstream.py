"""The stages upstream of the students: `data` (the split), `teacher` (its fine-tune) and `soft_labels` (its logits).

Each stage is three functions the stage graph (distill/stages.py) declares: `*_inputs(run)`, what its key hashes;
`build_*(run, tmp, inputs)`, which writes the stage into `tmp` and returns its info; `*_done(run, info)`, what follows
once it is built or found cached (a log line).
"""
from __future__ import annotations

import time

import numpy as np

from . import data as datasets
from .atomic import write_json
from .config import fingerprint
from .store import source_stamp
from .student_stage import class_weights


def data_inputs(run) -> dict:
    c = run.cfg["data"]
    # only a CSV is read from disk by name; mr, bbc and hf:<name> stand for themselves
    return {"data": c, "source": source_stamp(c["name"]) if c["name"].lower().endswith(".csv") else c["name"]}


def build_data(run, tmp, inputs) -> dict:
    c = run.cfg["data"]
    df = datasets.load(c["name"], c.get("text_col", "text"), c.get("label_col", "label"))
    for why, rows in df.attrs.get("dropped", {}).items():
        run.log(f"  data: note: left out {rows:,} row(s) with {why}")
    split, labels = datasets.make_split(df, c["split"], c["seed"], c.get("max_examples", 0))
    split.to_parquet(tmp / "split.parquet", index=False)
    write_json(tmp / "labels.json", labels)
    counts = split["split"].value_counts().to_dict()
    return {"examples": len(split), "labels": labels, "counts": counts}


def data_done(run, info) -> None:
    counts = info["counts"]
    run.log(f"  data: {run.cfg['data']['name']}, {info['examples']:,} examples, {len(info['labels'])} classes "
            f"({counts['train']:,} train / {counts['dev']:,} dev / {counts['test']:,} test)")


def teacher_inputs(run) -> dict:
    return {"teacher": run.cfg["teacher"], "data": run.key("data"),
            "metric": run.cfg["eval"].get("metric", "accuracy")}


def build_teacher(run, tmp, inputs) -> dict:
    from . import teacher as T
    c = run.cfg["teacher"]
    split, labels = run.split(), run.labels()
    source = T.resolve_model(c["model"], run.dir.parent / "_assets")
    dev_texts, dev_gold = datasets.texts_labels(split, "dev")
    if c.get("finetune", True):
        tokenizer, model = T.load_pretrained(source, len(labels), labels, seed=c["seed"])
        checkpoint = run.partial_dir("teacher", fingerprint(inputs)) / "checkpoint.pt"
        train = datasets.texts_labels(split, "train")
        metrics = T.fine_tune(model, tokenizer, train, (dev_texts, dev_gold), c, progress=run.progress,
                              checkpoint=checkpoint, log=run.log, score=run.metric(),
                              class_weights=class_weights(train[1], len(labels), c.get("class_weight")))
    else:
        tokenizer, model = T.load_pretrained(source)
        T.use_as_is(model, labels, T.parse_label_map(c.get("label_map", "")))
        started = time.time()
        logits = T.predict_logits(model.to(T.device()), tokenizer, dev_texts, c["max_length"],
                                  progress=run.progress, desc="teacher on dev")
        metrics = {"steps": 0, "best_dev_accuracy": run.metric()(dev_gold, logits.argmax(1)), "history": [],
                   "train_seconds": 0.0, "finetuned": False, "dev_seconds": round(time.time() - started, 2)}
    model.cpu().save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    return {**metrics, "params": int(model.num_parameters()), "source": c["model"], "dev_metric": run.metric().spec}


def teacher_done(run, info) -> None:
    from . import accelerated
    accelerated.release_helpers()   # `accelerate launch`: the other processes only help fine-tune; they leave now
    how = f"after {info['steps']} steps" if info.get("finetuned", True) else "used as it is (no fine-tuning)"
    run.log(f"  teacher: {run.cfg['teacher']['model']}, best dev {info.get('dev_metric', 'accuracy')} "
            f"{info['best_dev_accuracy']:.4f} {how}")


def soft_labels_inputs(run) -> dict:
    return {"labeller": run.key("labeller"), "teacher": run.key("teacher"), "version": 2}  # 2: dev, test by PyTorch


def build_soft_labels(run, tmp, inputs) -> dict:
    """The teacher's logits on every example: the training text labelled by the labeller (what students learn from),
    dev and test by the teacher in PyTorch, the reference every report compares with."""
    from . import labelling
    split = run.split()
    train = (split["split"] == "train").to_numpy()
    texts = split["text"].to_numpy()
    logits = np.zeros((len(split), len(run.labels())), dtype=np.float32)
    label = run.labeller()
    logits[train] = labelling.label_texts(run, label, list(texts[train]), "soft_labels", fingerprint(inputs)).logits
    reference = label if label.backend == "torch" else labelling.Labeller(
        "torch", None, run.teacher_dir(), run.cfg["teacher"]["max_length"], run.cfg["labelling"]["batch_size"])
    logits[~train] = reference(list(texts[~train]), progress=run.progress)
    out = split.copy()
    for k in range(logits.shape[1]):
        out[f"logit_{k}"] = logits[:, k]
    out.to_parquet(tmp / "soft_labels.parquet", index=False)
    return {"rows": len(out), "logits_source": f"train: {run.logits_source()}; dev and test: teacher in PyTorch "
                                               "(the reference)"}
