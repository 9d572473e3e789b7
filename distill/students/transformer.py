"""A small transformer student: the teacher's architecture cut to a few layers and initialised from the teacher's
own layers (DistilBERT, Sanh et al. 2019), or a BERT-tiny-shaped model trained from scratch; plus the born-again
student (Furlanello et al. 2018), which keeps all of the teacher's layers.

It reads text with the teacher's tokenizer, so the teacher's directory (`teacher`) is needed for `fit` only; the
fitted estimator holds its own model and tokenizer and pickles with joblib like every other student.
"""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn
from tqdm.auto import tqdm

from ..errors import UserError
from ..losses import student_loss
from .batches import length_buckets
from .early_stopping import EarlyStopping, dev_score
from .soft import is_soft

INITS = ("teacher", "scratch", "fresh")
LAYER_CHOICES = ("bottom", "uniform")
BERT_TINY = {"hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}  # Turc et al. 2019
LAYER_KEY = re.compile(r"\.layer\.(\d+)\.")


def teacher_layer_ids(teacher_layers: int, layers: int, choice: str) -> list[int]:
    """Which teacher layers the student's layers copy: the lowest ones (`bottom`), or every (L/k)-th from the first
    (`uniform`; DistilBERT's every other layer when k = L/2)."""
    if not 1 <= layers <= teacher_layers:
        raise UserError(f"a student of {layers} layers cannot be cut from a {teacher_layers}-layer teacher; "
                        f"choose layers between 1 and {teacher_layers} (0 = all)")
    if choice == "bottom":
        return list(range(layers))
    if choice == "uniform":
        return [i * teacher_layers // layers for i in range(layers)]
    raise UserError(f"unknown layer_choice {choice!r}; choose from {', '.join(LAYER_CHOICES)}")


def copy_teacher_layers(teacher, student, layer_ids: list[int]) -> None:
    """Load the teacher's embeddings, the chosen encoder layers and the pooler/classifier into `student`."""
    source = teacher.state_dict()
    target = student.state_dict()
    loaded = {}
    for name, value in target.items():
        match = LAYER_KEY.search(name)
        origin = name
        if match:
            origin = name[:match.start()] + f".layer.{layer_ids[int(match.group(1))]}." + name[match.end():]
        loaded[name] = source[origin] if origin in source and source[origin].shape == value.shape else value
    student.load_state_dict(loaded)


def initial_model(teacher_model, tokenizer, layers: int, init: str = "teacher", layer_choice: str = "uniform"):
    """The student network before training, and the teacher layers it copies (None for `scratch`).

    `teacher`: the teacher's configuration cut to `layers` layers (0 = all), with the teacher's embeddings, the
    layers picked by `layer_choice`, pooler and classifier copied in. `fresh`: the same shape, random weights.
    `scratch`: BERT-tiny's shape (128 wide, 2 heads, 512 feed-forward) with `layers` layers, random weights.
    """
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    if init not in INITS:
        raise UserError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    teacher_cfg = teacher_model.config
    layers = layers or teacher_cfg.num_hidden_layers
    if init == "scratch":
        cfg = BertConfig(vocab_size=len(tokenizer), num_hidden_layers=layers,
                         max_position_embeddings=getattr(teacher_cfg, "max_position_embeddings", 512),
                         pad_token_id=tokenizer.pad_token_id or 0, num_labels=teacher_cfg.num_labels, **BERT_TINY)
        return BertForSequenceClassification(cfg), None
    layer_ids = teacher_layer_ids(teacher_cfg.num_hidden_layers, layers, layer_choice)
    cfg = copy.deepcopy(teacher_cfg)
    cfg.num_hidden_layers = layers
    module = AutoModelForSequenceClassification.from_config(cfg)
    if init == "teacher":
        copy_teacher_layers(teacher_model, module, layer_ids)
    return module, layer_ids


def hidden_state_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into `hidden_states`: student layer j imitates the teacher layer at the same
    relative depth, round(j * L / k) (TinyBERT, Jiao et al. 2020)."""
    return [(j, round(j * teacher_layers / student_layers)) for j in range(1, student_layers + 1)]


class TransformerClassifier(ClassifierMixin, BaseEstimator):
    """A `layers`-layer transformer over the teacher's tokenizer. `fit(texts, y)`: y = labels (cross-entropy) or
    teacher logits (`loss`: mse | kl | mix, or teacher annealing with `anneal=True`).

    init: `teacher` copies the teacher's embeddings and layers chosen by `layer_choice` (0 layers = all of them);
    `scratch` is a random BERT-tiny shape (128 wide, 2 heads) with `layers` layers; `fresh` is the teacher's own
    shape with random weights. `freeze_word_embeddings` keeps word embeddings copied from the teacher fixed: they
    are most of a small student's weights (30k x 384 for MiniLM), and updating them every step costs more CPU time
    than the layers themselves while the teacher's are already good. `hidden_weight` > 0 adds the mean squared
    error between the student's hidden states and the teacher's (through a learned projection when the widths
    differ); it runs the teacher on every batch.
    """

    family = "transformer"
    fit_extras = ("hard_labels", "eval_set")

    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Initialised from the teacher (its layers, or its shape with `init="fresh"`), whatever the parameters."""
        return True

    def __init__(self, *, teacher=None, layers=3, init="teacher", layer_choice="uniform", max_length=64, epochs=2,
                 max_steps=0, batch_size=32, lr=1e-4, weight_decay=0.01, warmup=0.1, loss="mse", temperature=2.0,
                 alpha=0.5, anneal=False, hidden_weight=0.0, freeze_word_embeddings=True, patience=1, seed=13,
                 progress=True, class_weights=None, dev_metric=None):
        self.teacher = teacher
        self.layers = layers
        self.init = init
        self.layer_choice = layer_choice
        self.max_length = max_length
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.loss = loss
        self.temperature = temperature
        self.alpha = alpha
        self.anneal = anneal
        self.hidden_weight = hidden_weight
        self.freeze_word_embeddings = freeze_word_embeddings
        self.patience = patience
        self.seed = seed
        self.progress = progress
        self.class_weights = class_weights
        self.dev_metric = dev_metric

    # --- building the network ----------------------------------------------------------------------------------
    def _load_teacher(self, num_classes):
        from ..teacher import load_pretrained
        if not self.teacher:
            raise UserError("the transformer student needs its teacher: set `teacher` to the teacher's model dir")
        tokenizer, model = load_pretrained(str(self.teacher))
        if model.config.num_labels != num_classes:
            raise UserError(f"the teacher at {self.teacher} has {model.config.num_labels} classes, the data "
                            f"{num_classes}; train the student on the teacher's own task")
        return tokenizer, model.eval()

    # --- training ----------------------------------------------------------------------------------------------
    def fit(self, X, y, hard_labels=None, eval_set=None):
        from transformers import get_linear_schedule_with_warmup

        from ..teacher import device
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        X, y = list(X), np.asarray(y)
        soft = is_soft(y)
        num_classes = y.shape[1] if soft else int(y.max()) + 1
        if soft and (self.loss == "mix" or self.anneal) and hard_labels is None:
            raise ValueError("loss='mix' and anneal=True need hard_labels")
        self.classes_ = np.arange(num_classes)
        tokenizer, teacher_model = self._load_teacher(num_classes)
        self.tokenizer_ = tokenizer
        self.module_, self.teacher_layer_ids_ = initial_model(teacher_model, tokenizer, self.layers, self.init,
                                                              self.layer_choice)
        dev = device()
        self.module_.to(dev)
        pairs, projection = [], None
        if self.hidden_weight > 0:
            teacher_model.to(dev)
            pairs = hidden_state_pairs(self.module_.config.num_hidden_layers, teacher_model.config.num_hidden_layers)
            widths = (self.module_.config.hidden_size, teacher_model.config.hidden_size)
            projection = (nn.Linear(*widths) if widths[0] != widths[1] else nn.Identity()).to(dev)
        else:
            teacher_model = None

        enc = tokenizer(X, truncation=True, max_length=self.max_length)
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
        targets = torch.tensor(y, dtype=torch.float32 if soft else torch.long)
        gold = torch.tensor(np.asarray(hard_labels if hard_labels is not None else np.zeros(len(y))),
                            dtype=torch.long)
        steps_per_epoch = math.ceil(len(X) / self.batch_size)
        total = steps_per_epoch * self.epochs
        if self.max_steps:
            total = min(total, self.max_steps)
        if self.freeze_word_embeddings and self.init == "teacher":
            self.module_.get_input_embeddings().weight.requires_grad_(False)
        trainable = [w for w in self.module_.parameters() if w.requires_grad]
        trainable += list(projection.parameters()) if projection else []
        opt = torch.optim.AdamW(trainable, lr=self.lr, weight_decay=self.weight_decay, foreach=True)
        sched = get_linear_schedule_with_warmup(opt, int(self.warmup * total), total)

        step, stop = 0, False
        stopper = EarlyStopping(self.patience)
        bar = tqdm(total=total, desc="transformer", disable=not self.progress, leave=False)
        for epoch in range(self.epochs):
            self.module_.train()
            for batch in length_buckets(lengths, self.batch_size, rng):
                features = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in batch],
                                          "attention_mask": [enc["attention_mask"][i] for i in batch]},
                                         return_tensors="pt").to(dev)
                out = self.module_(**features, output_hidden_states=bool(pairs))
                batch_targets, batch_gold = targets[batch].to(dev), gold[batch].to(dev)
                loss = student_loss(self, out.logits, batch_targets, batch_gold, step / total)
                if pairs:
                    with torch.no_grad():
                        teacher_states = teacher_model(**features, output_hidden_states=True).hidden_states
                    loss = loss + self.hidden_weight * _hidden_mse(out.hidden_states, teacher_states, pairs,
                                                                   projection, features["attention_mask"])
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                if step >= total:
                    stop = True
                    break
            if eval_set is not None:
                score = dev_score(self, eval_set)
                bar.set_postfix(epoch=epoch + 1, dev_acc=f"{score:.3f}")
                stop = stopper.update(score, self._weights) or stop
            if stop:
                break
        bar.close()
        self.history_ = stopper.history
        if stopper.snapshot is not None:
            self.module_.load_state_dict(stopper.snapshot)
        self.module_.cpu().eval()
        return self

    def _weights(self) -> dict:
        return {k: v.detach().clone() for k, v in self.module_.state_dict().items()}

    # --- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, X, batch_size=128) -> np.ndarray:
        X = list(X)
        self.module_.eval()
        dev = next(self.module_.parameters()).device
        out = np.zeros((len(X), len(self.classes_)), dtype=np.float32)
        order = np.argsort([len(t) for t in X], kind="stable")
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            features = self.tokenizer_([X[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(dev)
            out[rows] = self.module_(input_ids=features["input_ids"],
                                     attention_mask=features["attention_mask"]).logits.float().cpu().numpy()
        return out

    def predict_proba(self, X):
        return torch.softmax(torch.from_numpy(self.predict_logits(X)), dim=-1).numpy()

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class BornAgainClassifier(TransformerClassifier):
    """Born-again network (Furlanello et al. 2018): a student of the teacher's own architecture, all its layers
    (`layers=0`), initialised as a copy of the teacher (`init="teacher"`) or afresh (`init="fresh"`), then
    distilled from the teacher like the small transformer. Costly on CPU: meant for the `full` profile or a GPU."""

    def __init__(self, *, teacher=None, layers=0, init="teacher", layer_choice="bottom", max_length=64, epochs=2,
                 max_steps=0, batch_size=32, lr=3e-5, weight_decay=0.01, warmup=0.1, loss="mse", temperature=2.0,
                 alpha=0.5, anneal=False, hidden_weight=0.0, freeze_word_embeddings=True, patience=1, seed=13,
                 progress=True, class_weights=None, dev_metric=None):
        super().__init__(teacher=teacher, layers=layers, init=init, layer_choice=layer_choice, max_length=max_length,
                         epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         warmup=warmup, loss=loss, temperature=temperature, alpha=alpha, anneal=anneal,
                         hidden_weight=hidden_weight, freeze_word_embeddings=freeze_word_embeddings,
                         patience=patience, seed=seed, progress=progress, class_weights=class_weights,
                         dev_metric=dev_metric)


def _hidden_mse(student_states, teacher_states, pairs, projection, attention_mask):
    """Mean squared error between paired hidden states over real (unpadded) tokens, averaged over the pairs."""
    mask = attention_mask.unsqueeze(-1).to(student_states[0].dtype)
    total = 0.0
    for s, t in pairs:
        diff = (projection(student_states[s]) - teacher_states[t]) * mask
        total = total + diff.pow(2).sum() / (mask.sum() * teacher_states[t].shape[-1])
    return total / len(pairs)
