"""A small transformer student: the teacher's architecture cut to a few layers and initialised from the teacher's
own layers (DistilBERT, Sanh et al. 2019), a BERT-tiny-shaped model trained from scratch, or a pretrained small
encoder (`base`, e.g. MiniLM-L6 learning from mpnet) with a fresh head; plus the born-again student (Furlanello et
al. 2018), which keeps all of the teacher's layers.

It reads text with the teacher's tokenizer, or the base's own when it starts from one; the teacher's directory
(`teacher`) is needed for `fit` only. The fitted estimator holds its own model and tokenizer and pickles with joblib
like every other student.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import torch
from torch import nn

from ..batching import length_batches
from ..errors import UserError
from ..losses import student_loss
from ..training_loop import device
from .pretrained_base import base_files, check_same_tokens, load_base
from .pruning import prune_feed_forward
from .torch_student import TorchStudent, student_parameters

INITS = ("teacher", "scratch", "fresh", "pretrained")
COPIED = ("teacher", "pretrained")   # inits whose word embeddings are trained already
LAYER_CHOICES = ("bottom", "uniform")
BERT_TINY = {"hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}  # Turc et al. 2019
LAYER_KEY = re.compile(r"\.layer\.(\d+)\.")


def teacher_layer_ids(teacher_layers: int, layers: int, choice: str, source: str = "teacher") -> list[int]:
    """Which teacher layers the student's layers copy: the lowest ones (`bottom`), or every (L/k)-th from the first
    (`uniform`; DistilBERT's every other layer when k = L/2). `source` names the model cut in the error."""
    if not 1 <= layers <= teacher_layers:
        raise UserError(f"a student of {layers} layers cannot be cut from a {teacher_layers}-layer {source}; "
                        f"choose layers between 1 and {teacher_layers} (0 = all)")
    if choice == "bottom":
        return list(range(layers))
    if choice == "uniform":
        return [i * teacher_layers // layers for i in range(layers)]
    raise UserError(f"unknown layer_choice {choice!r}; choose from {', '.join(LAYER_CHOICES)}")


def copy_teacher_layers(teacher, student, layer_ids: list[int], encoder_only: bool = False) -> None:
    """Load the teacher's embeddings, the chosen encoder layers and the pooler/classifier into `student`; with
    `encoder_only`, only what lies under the base model (the head stays as `student` has it)."""
    source = teacher.state_dict()
    target = student.state_dict()
    prefix = student.base_model_prefix + "."
    loaded = {}
    for name, value in target.items():
        if encoder_only and not name.startswith(prefix):
            loaded[name] = value
            continue
        match = LAYER_KEY.search(name)
        origin = name
        if match:
            origin = name[:match.start()] + f".layer.{layer_ids[int(match.group(1))]}." + name[match.end():]
        loaded[name] = source[origin] if origin in source and source[origin].shape == value.shape else value
    student.load_state_dict(loaded)


def initial_model(teacher_model, tokenizer, layers: int, init: str = "teacher", layer_choice: str = "uniform",
                  base_model=None):
    """The student network before training, and the teacher (or base) layers it copies (None for `scratch`).

    `teacher`: the teacher's configuration cut to `layers` layers (0 = all), with the teacher's embeddings, the
    layers picked by `layer_choice`, pooler and classifier copied in. `fresh`: the same shape, random weights.
    `scratch`: BERT-tiny's shape (128 wide, 2 heads, 512 feed-forward) with `layers` layers, random weights.
    `pretrained`: `base_model` cut the same way, its encoder copied in, a fresh head for the teacher's classes.
    """
    from transformers import BertConfig, BertForSequenceClassification

    if init not in INITS:
        raise UserError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    teacher_cfg = teacher_model.config
    if init == "scratch":
        cfg = BertConfig(vocab_size=len(tokenizer), num_hidden_layers=layers or teacher_cfg.num_hidden_layers,
                         max_position_embeddings=getattr(teacher_cfg, "max_position_embeddings", 512),
                         pad_token_id=tokenizer.pad_token_id or 0, num_labels=teacher_cfg.num_labels, **BERT_TINY)
        return BertForSequenceClassification(cfg), None
    if init == "pretrained":
        return cut_model(base_model, layers, layer_choice, labels_from=teacher_cfg)
    return cut_model(teacher_model, layers, layer_choice, copy_weights=init == "teacher")


def cut_model(source, layers: int, choice: str, copy_weights: bool = True, labels_from=None):
    """(`source`'s configuration cut to `layers` layers (0 = all), the source layers it copies). With `labels_from`
    (a config), the classes are that config's and only the encoder is copied: the head starts afresh."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(source.config)
    layer_ids = teacher_layer_ids(cfg.num_hidden_layers, layers or cfg.num_hidden_layers, choice,
                                  "teacher" if labels_from is None else "base")
    cfg.num_hidden_layers = len(layer_ids)
    if labels_from is not None:
        cfg.id2label, cfg.label2id = dict(labels_from.id2label), dict(labels_from.label2id)
    module = AutoModelForSequenceClassification.from_config(cfg)
    if copy_weights:
        copy_teacher_layers(source, module, layer_ids, encoder_only=labels_from is not None)
    return module, layer_ids


def hidden_state_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into `hidden_states`: student layer j imitates the teacher layer at the same
    relative depth, round(j * L / k) (TinyBERT, Jiao et al. 2020)."""
    return [(j, round(j * teacher_layers / student_layers)) for j in range(1, student_layers + 1)]


@student_parameters
class TransformerClassifier(TorchStudent):
    """A `layers`-layer transformer over the teacher's tokenizer. `fit(texts, y)`: y = labels (cross-entropy) or
    teacher logits (`loss`: mse | kl | mix, or teacher annealing with `anneal=True`).

    init: `teacher` copies the teacher's embeddings and layers chosen by `layer_choice` (0 layers = all of them);
    `scratch` is a random BERT-tiny shape (128 wide, 2 heads) with `layers` layers; `fresh` is the teacher's own
    shape with random weights; `pretrained` is the encoder `base` (an alias, a Hugging Face id or a local model
    dir), its own tokenizer and width, cut like the teacher, under a fresh head for the teacher's classes.
    `freeze_word_embeddings` keeps word embeddings copied from the teacher (or base) fixed: they are most of a small
    student's weights (30k x 384 for MiniLM), and updating them every step costs more CPU time than the layers
    themselves while the copied ones are already good. `hidden_weight` > 0 adds the mean squared error between the
    student's hidden states and the teacher's (through a learned projection when the widths differ); it runs the
    teacher on every batch, on the student's tokens, so a base must tokenize as the teacher does. `ffn_keep` < 1
    keeps that share of every layer's feed-forward neurons, the most important on the training text
    (distill/students/pruning.py), before training: a narrower, faster layer at the same depth.
    """

    family = "transformer"
    clip_norm = 1.0

    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Built from the teacher (its layers, its shape with `init="fresh"`, or its classes and hidden states under
        a pretrained base), whatever the parameters."""
        return True

    @staticmethod
    def outside_files(params: dict) -> list | None:
        """The files of a local `base` directory, which the stage key stamps (pretrained_base.base_files)."""
        return base_files(params.get("base", ""))

    teacher: str | None = None
    layers: int = 3
    init: str = "teacher"
    base: str = ""
    layer_choice: str = "uniform"
    max_length: int = 64
    max_steps: int = 0
    weight_decay: float = 0.01
    warmup: float = 0.1
    hidden_weight: float = 0.0
    ffn_keep: float = 1.0
    freeze_word_embeddings: bool = True
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    memory: str | None = None   # where an alias's archive is unpacked (the run's cache)

    # --- training (the loop is TorchStudent's) -------------------------------------------------------------------
    def _load_teacher(self, num_classes):
        from ..teacher import load_pretrained
        if not self.teacher:
            raise UserError("the transformer student needs its teacher: set `teacher` to the teacher's model dir")
        tokenizer, model = load_pretrained(str(self.teacher))
        if model.config.num_labels != num_classes:
            raise UserError(f"the teacher at {self.teacher} has {model.config.num_labels} classes, the data "
                            f"{num_classes}; train the student on the teacher's own task")
        return tokenizer, model.eval()

    def _network(self, texts, num_classes):
        tokenizer, teacher_model = self._load_teacher(num_classes)
        base_model = None
        if self.init == "pretrained":
            teacher_tokenizer, (tokenizer, base_model) = tokenizer, load_base(self.base, self.memory)
            if self.hidden_weight > 0:
                check_same_tokens(tokenizer, teacher_tokenizer, texts, self.max_length, self.base)
        elif self.base:
            raise UserError(f'base {self.base!r} is read only with init = "pretrained"; set init = "pretrained" or '
                            'base = ""')
        self.tokenizer_ = tokenizer
        self.module_, self.teacher_layer_ids_ = initial_model(teacher_model, tokenizer, self.layers, self.init,
                                                              self.layer_choice, base_model)
        self.module_.to(device())
        if self.ffn_keep != 1:
            if self.init not in COPIED:
                raise UserError(f"ffn_keep < 1 prunes trained weights; init {self.init!r} starts from random ones: "
                                f"set init to {' or '.join(COPIED)}, or ffn_keep = 1")
            prune_feed_forward(self.module_, self.ffn_keep, tokenizer, list(texts), self.max_length)
        self._hidden_loss = HiddenStateLoss(self.module_, teacher_model) if self.hidden_weight > 0 else None
        if self.freeze_word_embeddings and self.init in COPIED:
            self.module_.get_input_embeddings().weight.requires_grad_(False)
        return self.module_

    def _training_inputs(self, texts):
        encoded = self.tokenizer_(texts, truncation=True, max_length=self.max_length)
        return encoded, np.array([len(ids) for ids in encoded["input_ids"]])

    def _batch(self, encoded, rows):
        return self.tokenizer_.pad({"input_ids": [encoded["input_ids"][i] for i in rows],
                                    "attention_mask": [encoded["attention_mask"][i] for i in rows]},
                                   return_tensors="pt").to(device())

    def _loss(self, network, features, targets, gold, progress):
        out = network(**features, output_hidden_states=self._hidden_loss is not None)
        loss = student_loss(self, out.logits, targets.to(device()), gold.to(device()), progress)
        if self._hidden_loss is not None:
            loss = loss + self.hidden_weight * self._hidden_loss(features, out.hidden_states)
        return loss

    def _trainable(self, network):
        projection = [] if self._hidden_loss is None else list(self._hidden_loss.projection.parameters())
        return super()._trainable(network) + projection

    def _optimiser(self, parameters, total):
        from transformers import get_linear_schedule_with_warmup
        optimiser = torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay, foreach=True)
        return optimiser, get_linear_schedule_with_warmup(optimiser, int(self.warmup * total), total)

    def _finish(self, network):
        del self._hidden_loss   # the teacher and the projection: for training only
        network.cpu().eval()

    # --- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, X, batch_size=128) -> np.ndarray:
        X = list(X)
        self.module_.eval()
        dev = next(self.module_.parameters()).device
        out = np.zeros((len(X), len(self.classes_)), dtype=np.float32)
        for rows in length_batches([len(t) for t in X], batch_size):
            features = self.tokenizer_([X[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(dev)
            out[rows] = self.module_(input_ids=features["input_ids"],
                                     attention_mask=features["attention_mask"]).logits.float().cpu().numpy()
        return out

    def predict_proba(self, X):
        return torch.softmax(torch.from_numpy(self.predict_logits(X)), dim=-1).numpy()


@student_parameters
class BornAgainClassifier(TransformerClassifier):
    """Born-again network (Furlanello et al. 2018): a student of the teacher's own architecture, all its layers
    (`layers=0`), initialised as a copy of the teacher (`init="teacher"`) or afresh (`init="fresh"`), then
    distilled from the teacher like the small transformer. Costly on CPU: meant for the `full` profile or a GPU."""

    layers: int = 0
    layer_choice: str = "bottom"
    lr: float = 3e-5

class HiddenStateLoss(nn.Module):
    """The mean squared error between the student's hidden states and the teacher's at the same relative depth
    (`hidden_state_pairs`), over real (unpadded) tokens, averaged over the pairs; through a learned projection when
    the widths differ. It runs the (frozen) teacher on every batch."""

    def __init__(self, student, teacher):
        super().__init__()
        self.pairs = hidden_state_pairs(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
        widths = (student.config.hidden_size, teacher.config.hidden_size)
        self.projection = (nn.Linear(*widths) if widths[0] != widths[1] else nn.Identity()).to(device())
        self.teacher = [teacher.to(device())]   # in a list: not a submodule, neither trained nor saved

    def forward(self, features, student_states):
        with torch.no_grad():
            teacher_states = self.teacher[0](**features, output_hidden_states=True).hidden_states
        mask = features["attention_mask"].unsqueeze(-1).to(student_states[0].dtype)
        total = 0.0
        for s, t in self.pairs:
            diff = (self.projection(student_states[s]) - teacher_states[t]) * mask
            total = total + diff.pow(2).sum() / (mask.sum() * teacher_states[t].shape[-1])
        return total / len(self.pairs)
