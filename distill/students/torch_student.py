"""The base of the students trained step by step with torch (BiLSTM, static, transformer).

`TorchStudent.fit` is the house's one training loop (distill/training_loop.py) for every one of them: seeding,
targets (gold labels or the teacher's logits), batches of similar length, the loss (`losses.student_loss`:
cross-entropy, a distillation loss or teacher annealing), early stopping on the dev split with the run's metric, the
thread setting and the progress bar. A student declares only what is its own:

- `_network(texts, num_classes)`: the network to train, built after seeding (it may set learned attributes);
- `_training_inputs(texts)`: each training text encoded once, and its length;
- `_batch(inputs, rows)`: the keyword arguments of the network's forward for those rows;
- and, where the defaults do not fit: `_loss` (default: `student_loss` of the network's logits), `_trainable`,
  `_optimiser` (Adam), `_batches` (length buckets), `_publish` (what `predict` reads, from the network) and
  `_finish`.

Its parameters are annotated class attributes with their defaults, made its keyword-only `__init__` by
`@student_parameters` (a dataclass's, as scikit-learn wants them: one argument per parameter, stored as it is); those
of the loop are declared here once, and a student redeclares one only to change its default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from ..batching import length_batches
from ..losses import student_loss
from ..training_loop import Plan, load_checkpoint, torch_threads, train, weights_copy
from .soft import is_soft

# Parameters as annotated attributes: a keyword-only __init__ that stores each argument, and scikit-learn's own
# equality and repr (a fitted student is not equal to another because its parameters are).
student_parameters = dataclass(kw_only=True, eq=False, repr=False)
LENGTH_JITTER = 3   # tokens of noise in the length buckets: texts of one length do not always share a batch


def dev_score(student, eval_set) -> float:
    """The student's score on `eval_set` = (texts, gold): its `dev_metric(gold, predicted)` when set (the run's
    `[eval] metric`), else accuracy."""
    predicted, gold = student.predict(eval_set[0]), np.asarray(eval_set[1])
    metric = getattr(student, "dev_metric", None)
    return float(metric(gold, predicted)) if metric is not None else float(np.mean(predicted == gold))


def training_targets(y: np.ndarray, hard_labels, needs_gold: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(targets, gold labels, number of classes): `y` is gold labels (1-D) or the teacher's logits (2-D), beside
    which `hard_labels` are the gold labels that `loss="mix"` and annealing (`needs_gold`) read."""
    soft = is_soft(y)
    if soft and needs_gold and hard_labels is None:
        raise ValueError("loss='mix' and anneal=True need hard_labels")
    targets = torch.tensor(y, dtype=torch.float32 if soft else torch.long)
    gold = torch.tensor(np.asarray(hard_labels if hard_labels is not None else np.zeros(len(y))), dtype=torch.long)
    return targets, gold, y.shape[1] if soft else int(y.max()) + 1


@student_parameters
class TorchStudent(ClassifierMixin, BaseEstimator):
    """`fit(texts, y)`: y = gold labels (cross-entropy) or the teacher's logits (`loss`: mse | kl | mix, the last
    `alpha` x cross-entropy with `hard_labels` + the rest KL at `temperature`; `anneal=True`: teacher annealing
    instead, from the teacher's probabilities to `hard_labels`). `epochs` of `batch_size` texts at learning rate
    `lr`; with `eval_set=(texts, labels)`, a dev evaluation after each epoch, stopping after more than `patience`
    without improvement and keeping the best weights. `class_weights` weight the gold-label cross-entropy;
    `dev_metric(gold, predicted)` is what early stopping follows (accuracy when None). With `checkpoint` (a file
    path), the fit saves its state there every `checkpoint_seconds` of training and at each evaluation, and a later
    fit of the same student on the same data resumes from it bit for bit (`resumed_from_`: the step it resumed at)."""

    fit_extras: ClassVar[tuple] = ("hard_labels", "eval_set", "checkpoint")
    checkpoint_seconds: ClassVar[float] = 600.0   # a long fit (a transformer on the transfer set) loses at most this
    train_threads: ClassVar[int | None] = None   # torch threads while training (None: as the process has them)
    clip_norm: ClassVar[float | None] = None     # gradients clipped to this norm (None: not clipped)

    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    loss: str = "mse"
    temperature: float = 2.0
    alpha: float = 0.5
    anneal: bool = False
    patience: int = 1
    seed: int = 13
    progress: bool = True
    class_weights: list | None = None
    dev_metric: Callable | None = None

    def fit(self, X, y, hard_labels=None, eval_set=None, checkpoint=None):
        with torch_threads(self.train_threads):
            torch.manual_seed(self.seed)
            rng = np.random.default_rng(self.seed)
            X, y = list(X), np.asarray(y)
            targets, gold, num_classes = training_targets(y, hard_labels, self.loss == "mix" or self.anneal)
            self.classes_ = np.arange(num_classes)
            network = self._network(X, num_classes)
            inputs, lengths = self._training_inputs(X)
            steps_per_epoch = math.ceil(len(X) / self.batch_size)
            total = steps_per_epoch * self.epochs
            if getattr(self, "max_steps", 0):   # a cap on the steps, where a student takes one
                total = min(total, self.max_steps)
            parameters = self._trainable(network)
            optimiser, schedule = self._optimiser(parameters, total)
            job = _StudentJob(self, network, inputs, lengths, targets, gold, optimiser, schedule, parameters,
                              eval_set, total)
            plan = Plan(total, steps_per_epoch if eval_set is not None else 0, self.patience)
            saved = load_checkpoint(checkpoint)
            if saved is not None and saved["job"].get("fit") != job.fit_shape():
                saved = None   # another fit's: start over
            outcome = train(job, plan, rng, desc=self.family, progress=self.progress, checkpoint=checkpoint,
                            resume=saved, checkpoint_every=self.checkpoint_seconds)
            self.history_ = [h["score"] for h in outcome.history]
            self.resumed_from_ = outcome.resumed_from
            self._publish(network)
            self._finish(network)
        return self

    # --- declared by each student (see the module's docstring) -----------------------------------------------------
    def _network(self, texts: list[str], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def _training_inputs(self, texts: list[str]) -> tuple[list, np.ndarray]:
        raise NotImplementedError

    def _batch(self, inputs: list, rows: np.ndarray) -> dict:
        raise NotImplementedError

    # --- defaults --------------------------------------------------------------------------------------------------
    def _loss(self, network, features: dict, targets, gold, progress: float):
        return student_loss(self, network(**features), targets, gold, progress)

    def _trainable(self, network) -> list:
        return [p for p in network.parameters() if p.requires_grad]

    def _optimiser(self, parameters: list, total: int):
        """(optimiser, learning-rate schedule or None)."""
        return torch.optim.Adam(parameters, lr=self.lr), None

    def _batches(self, lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return length_batches(lengths, self.batch_size, rng, jitter=LENGTH_JITTER)

    def _publish(self, network) -> None:
        """Make what `predict` reads from the network as it is now (nothing to do when that is the network)."""

    def _finish(self, network) -> None:
        network.eval()

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class _StudentJob:
    """A student's fit as `training_loop.train` takes it."""

    def __init__(self, student, network, inputs, lengths, targets, gold, optimiser, schedule, parameters, eval_set,
                 total):
        self.student, self.network, self.inputs, self.lengths = student, network, inputs, lengths
        self.targets, self.gold, self.eval_set, self.total = targets, gold, eval_set, total
        self.optimiser, self.schedule, self.parameters = optimiser, schedule, parameters

    def epoch(self, rng):
        return self.student._batches(self.lengths, rng)

    def step(self, rows, progress: float) -> float:
        student = self.student
        self.network.train()
        loss = student._loss(self.network, student._batch(self.inputs, rows), self.targets[rows], self.gold[rows],
                             progress)
        self.optimiser.zero_grad()
        loss.backward()
        if student.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.parameters, student.clip_norm)
        self.optimiser.step()
        if self.schedule is not None:
            self.schedule.step()
        return loss.item()

    def score(self) -> float:
        self.student._publish(self.network)
        return dev_score(self.student, self.eval_set)

    def snapshot(self) -> dict:
        return weights_copy(self.network)

    def restore(self, snapshot: dict) -> None:
        self.network.load_state_dict(snapshot)

    def fit_shape(self) -> dict:
        """What a checkpoint must share with this fit to resume it."""
        return {"student": type(self.student).__name__, "texts": len(self.lengths), "steps": self.total}

    def state_dict(self) -> dict:
        return {"fit": self.fit_shape(), "network": self.network.state_dict(),
                "optimiser": self.optimiser.state_dict(),
                "schedule": None if self.schedule is None else self.schedule.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.optimiser.load_state_dict(state["optimiser"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
