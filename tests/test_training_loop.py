"""The one training loop (distill/training_loop.py) and the one length batching (distill/batching.py), on a toy job
whose every step and score is known."""
from __future__ import annotations

import numpy as np
import pytest

from distill import training_loop as loop
from distill.batching import length_batches


class Counting:
    """Weights = the batches stepped on so far; the dev score of evaluation k is `scores[k]`."""

    def __init__(self, scores, n=10, batch_size=3):
        self.scores, self.n, self.batch_size = list(scores), n, batch_size
        self.weights: list[int] = []
        self.evaluated = 0

    def epoch(self, rng):
        return length_batches(np.arange(self.n), self.batch_size, rng)

    def step(self, batch, progress):
        self.weights.append(int(batch[0]))
        return float(len(self.weights))

    def score(self):
        self.evaluated += 1
        return self.scores[self.evaluated - 1]

    def snapshot(self):
        return list(self.weights)

    def restore(self, snapshot):
        self.weights = list(snapshot)

    def state_dict(self):
        return {"weights": list(self.weights), "evaluated": self.evaluated}

    def load_state_dict(self, state):
        self.weights, self.evaluated = list(state["weights"]), state["evaluated"]


def test_length_batches_sort_by_length_and_shuffle_with_a_generator():
    lengths = np.array([5, 1, 4, 1, 3, 2, 9])
    assert [b.tolist() for b in length_batches(lengths, 3)] == [[1, 3, 5], [4, 2, 0], [6]]
    shuffled = length_batches(lengths, 3, np.random.default_rng(0), jitter=3)
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(7)) and max(map(len, shuffled)) == 3
    again = length_batches(lengths, 3, np.random.default_rng(0), jitter=3)
    assert all(np.array_equal(a, b) for a, b in zip(shuffled, again))


def test_evaluations_follow_the_plan_and_the_best_weights_are_kept():
    # 4 steps an epoch, 10 in all: evaluations at steps 3, 6, 9 and the last, 10
    job = Counting(scores=[0.5, 0.7, 0.6, 0.65])
    outcome = loop.train(job, loop.Plan(total=10, eval_every=3, patience=5), np.random.default_rng(0), desc="toy",
                         progress=False)
    assert [h["step"] for h in outcome.history] == [3, 6, 9, 10] and outcome.steps == 10
    assert outcome.best == 0.7 and len(job.weights) == 6   # the weights of step 6, the best evaluation


def test_early_stopping_after_patience_evaluations_without_improvement():
    job = Counting(scores=[0.9, 0.8, 0.8, 0.8, 0.95])
    outcome = loop.train(job, loop.Plan(total=40, eval_every=2, patience=2), np.random.default_rng(0), desc="toy",
                         progress=False)
    assert [h["score"] for h in outcome.history] == [0.9, 0.8, 0.8, 0.8] and outcome.steps == 8
    assert len(job.weights) == 2


def test_no_early_stop_before_min_steps_then_stops_at_the_first_evaluation_past_patience():
    # without min_steps the run stops at step 8 (test above); with it, the plateau must show after step 12 too
    job = Counting(scores=[0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.95])
    outcome = loop.train(job, loop.Plan(total=40, eval_every=2, patience=2, min_steps=12), np.random.default_rng(0),
                         desc="toy", progress=False)
    assert outcome.steps == 12 and [h["step"] for h in outcome.history] == [2, 4, 6, 8, 10, 12]
    assert outcome.best == 0.9 and len(job.weights) == 2   # the best evaluation's weights, from step 2


def test_the_fine_tune_length_is_epochs_or_min_steps_on_small_data_capped_by_max_steps():
    from distill.teacher import plateau_steps
    assert plateau_steps(319, {"epochs": 4, "min_steps": 600, "max_steps": 0}) == 1276       # MR: 4 epochs
    assert plateau_steps(114, {"epochs": 4, "min_steps": 600, "max_steps": 0}) == 600        # small data: more
    assert plateau_steps(114, {"epochs": 4, "min_steps": 600, "max_steps": 60}) == 60        # a hard cap


def test_early_stopping_may_end_a_fine_tune_after_min_steps_or_half_its_schedule():
    from distill.teacher import earliest_stop
    assert earliest_stop(957, {"min_steps": 600}) == 478     # MR: half of its three epochs comes first
    assert earliest_stop(1914, {"min_steps": 600}) == 600    # a longer schedule: min_steps
    assert earliest_stop(600, {"min_steps": 600}) == 300     # small data, whose schedule is min_steps long
    assert earliest_stop(60, {}) == 0                        # a hand-made cfg without min_steps: any evaluation


def test_a_run_resumed_from_its_checkpoint_steps_on_the_same_batches(tmp_path, monkeypatch):
    plan, scores = loop.Plan(total=12, eval_every=5, patience=9), [0.1, 0.2, 0.3]
    whole = Counting(scores)
    loop.train(whole, plan, np.random.default_rng(7), desc="toy", progress=False)

    class Killed(Exception):
        pass

    def save_then_die(path, state):
        honest_save(path, state)
        raise Killed
    honest_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        loop.train(Counting(scores), plan, np.random.default_rng(7), desc="toy", progress=False, checkpoint=checkpoint)
    monkeypatch.undo()
    saved = loop.load_checkpoint(checkpoint)
    assert saved["at"]["step"] == 5
    resumed = Counting(scores)
    outcome = loop.train(resumed, plan, np.random.default_rng(7), desc="toy", progress=False, checkpoint=checkpoint,
                         resume=saved)
    assert outcome.resumed_from == 5 and resumed.weights == whole.weights
    assert loop.load_checkpoint(tmp_path / "missing.pt") is None
