"""The one training loop of the house, for the teacher's fine-tune and for every torch student.

`train(job, plan, rng)` owns what they share: epochs of batches drawn from one seeded numpy generator, optimiser
steps counted to a total, a dev evaluation every `plan.eval_every` steps and at the last, early stopping that keeps
the weights of the best evaluation, a progress bar, and checkpoints (at every evaluation, and every so many seconds
in a long epoch) from which a later call resumes bit for bit. What differs is the job's: how an epoch is cut into
steps, what one step does (network, loss, optimiser), how the dev set is scored, and what its weights are.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def torch_threads(count: int | None):
    """torch's intra-op threads set to `count` inside the block (None: left as they are), restored after."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def weights_copy(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Job(Protocol):
    """What `train` asks of the thing it trains."""

    def epoch(self, rng: np.random.Generator) -> list:
        """This epoch's optimiser steps, in order, each what `step` takes; draws only from `rng`."""

    def step(self, batches, progress: float) -> float:
        """One optimiser step on `batches` at `progress` = steps taken / total; returns its loss."""

    def score(self) -> float:
        """The dev score, higher is better."""

    def snapshot(self):
        """A copy of the weights as they are now."""

    def restore(self, snapshot) -> None:
        """Put back the weights of a `snapshot()`."""


@dataclass
class Plan:
    total: int          # optimiser steps in all
    eval_every: int     # steps between dev evaluations, and one at the last step; 0: never evaluate
    patience: int       # evaluations in a row without improvement that are tolerated
    min_steps: int = 0  # no early stop before this many steps (a plateau needs a few evaluations to show)

    def evaluates_at(self, step: int) -> bool:
        return self.eval_every > 0 and (step % self.eval_every == 0 or step == self.total)


@dataclass
class Outcome:
    steps: int
    best: float                          # the best dev score (-1.0: never evaluated)
    history: list[dict] = field(default_factory=list)   # {"step", "score", "loss"} per evaluation
    seconds: float = 0.0                 # training time, before an interruption included
    resumed_from: int | None = None      # the checkpoint's step, when resumed


class EarlyStopping:
    """Keeps a snapshot of the weights at their best dev score and says when to stop: after more than `patience`
    evaluations in a row without improvement."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -1.0
        self.bad = 0
        self.snapshot = None

    def update(self, score: float, snapshot) -> bool:
        """Record one dev score; `snapshot()` is called only when it is the best so far. True means stop."""
        if score > self.best:
            self.best, self.bad, self.snapshot = score, 0, snapshot()
        else:
            self.bad += 1
        return self.bad > self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad, "snapshot": self.snapshot}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad, self.snapshot = state["best"], state["bad"], state["snapshot"]


def train(job: Job, plan: Plan, rng: np.random.Generator, *, desc: str, progress: bool = True, leave: bool = False,
          checkpoint: Path | None = None, resume: dict | None = None, checkpoint_every: float | None = None,
          agree=lambda stop: stop, log=None) -> Outcome:
    """Train `job` to `plan`, its batches drawn from `rng`; the best evaluated weights are restored at the end.

    `checkpoint` (a file): saved at every evaluation but the last, with the job's `state_dict()`, and also between
    evaluations once `checkpoint_every` seconds have passed since the last save (None: only at evaluations).
    `resume`: such a checkpoint, read back (`load_checkpoint`); the job's part goes to its `load_state_dict`, and
    training goes on from where it was saved. `agree(stop)`: the decision to stop as every
    process should take it (accelerate). `log`: also warn there when steps slow down (`Pace`)."""
    stopper, history = EarlyStopping(plan.patience), []
    at = {"step": 0, "position": 0, "epoch_rng": rng.bit_generator.state, "seconds": 0.0}
    if resume is not None:
        job.load_state_dict(resume["job"])
        stopper.load_state_dict(resume["stopper"])
        history, at = list(resume["history"]), dict(resume["at"])
    resumed_from = None if resume is None else at["step"]
    started = time.time() - at["seconds"]
    last_save = time.time()
    bar = tqdm(total=plan.total, initial=at["step"], desc=desc, disable=not progress, leave=leave)
    pace = None if log is None else Pace(bar.write if progress else log)
    stop = at["step"] >= plan.total
    while not stop:
        rng.bit_generator.state = at["epoch_rng"]
        steps = job.epoch(rng)
        for position in range(at["position"], len(steps)):
            loss = job.step(steps[position], at["step"] / plan.total)
            at["step"] += 1
            if pace is not None:
                pace.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", dev=f"{stopper.best:.3f}" if history else "not yet")
            evaluated = plan.evaluates_at(at["step"])
            if evaluated:
                score = job.score()
                history.append({"step": at["step"], "score": score, "loss": loss})
                stop = agree(stopper.update(score, job.snapshot) and at["step"] >= plan.min_steps)
            due = evaluated or (checkpoint_every is not None and time.time() - last_save >= checkpoint_every)
            if checkpoint is not None and due and not stop and at["step"] < plan.total:
                at.update(position=position + 1, seconds=time.time() - started)
                save_checkpoint(checkpoint, {"at": at, "stopper": stopper.state_dict(), "history": history,
                                             "job": job.state_dict()})
                last_save = time.time()
            if stop or at["step"] >= plan.total:
                stop = True
                break
        else:
            at.update(position=0, epoch_rng=rng.bit_generator.state)
    bar.close()
    if stopper.snapshot is not None:
        job.restore(stopper.snapshot)
    return Outcome(at["step"], stopper.best, history, time.time() - started, resumed_from)


def save_checkpoint(path: Path, state: dict) -> None:
    from .atomic import atomic_path
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path | None) -> dict | None:
    """A checkpoint `train` saved at `path`; None when there is none, or none it can read."""
    if path is None or not Path(path).exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # cut short by the crash it was meant to survive: start over
        return None
    return saved if isinstance(saved, dict) and {"at", "stopper", "history", "job"} <= saved.keys() else None


class Pace:
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
