"""A small transformer student: the teacher's architecture cut to a few layers and initialised from the teacher's
own layers (DistilBERT, Sanh et al. 2019), or a BERT-tiny-shaped model trained from scratch; plus the born-again
student (Furlanello et al. 2018), which keeps all of the teacher's layers.

It reads text with the teacher's tokenizer, so the teacher's directory (`teacher`) is needed for `fit` only; the
fitted estimator holds its own model and tokenizer and pickles with joblib like every other student.
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
from .torch_student import TorchStudent, student_parameters

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


@student_parameters
class TransformerClassifier(TorchStudent):
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
    clip_norm = 1.0

    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Initialised from the teacher (its layers, or its shape with `init="fresh"`), whatever the parameters."""
        return True

    teacher: str | None = None
    layers: int = 3
    init: str = "teacher"
    layer_choice: str = "uniform"
    max_length: int = 64
    max_steps: int = 0
    weight_decay: float = 0.01
    warmup: float = 0.1
    hidden_weight: float = 0.0
    freeze_word_embeddings: bool = True
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4

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
        self.tokenizer_ = tokenizer
        self.module_, self.teacher_layer_ids_ = initial_model(teacher_model, tokenizer, self.layers, self.init,
                                                              self.layer_choice)
        self.module_.to(device())
        self._hidden_loss = HiddenStateLoss(self.module_, teacher_model) if self.hidden_weight > 0 else None
        if self.freeze_word_embeddings and self.init == "teacher":
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
