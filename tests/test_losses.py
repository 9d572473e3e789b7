"""Each distillation loss against a value worked out by hand, and the teacher-annealing schedule's endpoints."""
import math

import numpy as np
import pytest
import torch

from distill.ablation import fixed_mix_logits
from distill.losses import annealed_target_loss, kd_loss


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_mse_is_the_mean_squared_logit_gap():
    # gaps 1 and 2 on one example: (1 + 4) / 2
    assert kd_loss(t([[1.0, 2.0]]), t([[0.0, 0.0]]), loss="mse").item() == pytest.approx(2.5)


def test_kl_softens_both_sides_and_scales_by_t_squared():
    # teacher logits (2 ln 3, 0) at T = 2 -> (ln 3, 0) -> p = (3/4, 1/4); student (0, 0) -> q = (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    value = kd_loss(t([[0.0, 0.0]]), t([[2 * math.log(3), 0.0]]), loss="kl", temperature=2.0)
    assert value.item() == pytest.approx(4 * kl, rel=1e-5)  # 0.5232...


def test_mix_weights_gold_cross_entropy_by_alpha():
    kl = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    value = kd_loss(t([[0.0, 0.0]]), t([[2 * math.log(3), 0.0]]), torch.tensor([0]), loss="mix", temperature=2.0,
                    alpha=0.25)
    assert value.item() == pytest.approx(0.25 * math.log(2) + 0.75 * kl, rel=1e-5)


def test_loss_errors():
    with pytest.raises(ValueError, match="gold labels"):
        kd_loss(t([[0.0, 0.0]]), t([[0.0, 0.0]]), loss="mix")
    with pytest.raises(ValueError, match="unknown distillation loss"):
        kd_loss(t([[0.0, 0.0]]), t([[0.0, 0.0]]), loss="hinge")


# student logits (ln 3, 0) -> q = (3/4, 1/4); teacher (0, 0) -> p = (1/2, 1/2); gold = class 1
STUDENT, TEACHER, GOLD = t([[math.log(3), 0.0]]), t([[0.0, 0.0]]), torch.tensor([1])


def test_annealing_at_lambda_0_is_the_pure_teacher_target():
    expected = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))  # 0.8370
    assert annealed_target_loss(STUDENT, TEACHER, GOLD, 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_annealing_at_lambda_1_is_the_gold_label():
    value = annealed_target_loss(STUDENT, TEACHER, GOLD, 1.0)
    assert value.item() == pytest.approx(-math.log(0.25), rel=1e-6)  # 1.3863
    assert value.item() == pytest.approx(torch.nn.functional.cross_entropy(STUDENT, GOLD).item(), rel=1e-6)


def test_annealing_halfway_mixes_the_targets():
    # target (1/4, 3/4)
    expected = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))  # 1.1116
    assert annealed_target_loss(STUDENT, TEACHER, GOLD, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_fixed_mix_for_scikit_learn_students_spans_teacher_to_gold():
    teacher = np.array([[2.0, 0.0], [0.0, 1.0]])
    gold = np.array([1, 1])
    probs = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
    assert np.allclose(np.exp(fixed_mix_logits(teacher, gold, weight=0.0)), probs, atol=1e-6)
    assert np.allclose(np.exp(fixed_mix_logits(teacher, gold, weight=1.0)), [[1e-4, 1.0], [1e-4, 1.0]], atol=1e-7)
    assert np.allclose(np.exp(fixed_mix_logits(teacher, gold)), 0.5 * probs + 0.5 * np.eye(2)[gold], atol=1e-6)
