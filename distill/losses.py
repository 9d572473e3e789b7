"""Distillation losses (PyTorch), shared by every neural student.

- `mse`: mean squared error between student and teacher logits (Tang et al. 2019).
- `kl`: KL divergence between temperature-softened distributions, scaled by T^2 so gradients keep their size as T
  grows (Hinton et al. 2015).
- `mix`: alpha * cross-entropy with the gold label + (1 - alpha) * kl.
Teacher annealing (Clark et al. 2019) moves the target from the teacher toward the gold label: target =
(1 - lam) * teacher + lam * one_hot(gold), lam = step / total_steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "kl", "mix")


def kd_loss(student_logits, teacher_logits, hard_labels=None, loss="mse", temperature=1.0, alpha=0.5,
            class_weights=None):
    if loss == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.softmax(teacher_logits / temperature, dim=-1),
                    reduction="batchmean") * temperature ** 2
    if loss == "kl":
        return soft
    if loss == "mix":
        if hard_labels is None:
            raise ValueError("loss='mix' needs the gold labels")
        return alpha * F.cross_entropy(student_logits, hard_labels, weight=class_weights) + (1 - alpha) * soft
    raise ValueError(f"unknown distillation loss {loss!r}; choose from {', '.join(LOSSES)}")


def annealed_target_loss(student_logits, teacher_logits, hard_labels, lam, temperature=1.0):
    """Cross-entropy against (1 - lam) * softened teacher probabilities + lam * one-hot gold label."""
    teacher_probs = F.softmax(teacher_logits / temperature, dim=-1)
    gold = F.one_hot(hard_labels, num_classes=student_logits.shape[-1]).to(teacher_probs.dtype)
    target = (1 - lam) * teacher_probs + lam * gold
    return -(target * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()


def student_loss(student, logits, targets, gold, progress: float):
    """The loss of one training step of a step-by-step `student` (BiLSTM, transformer, static): cross-entropy on
    gold labels (1-D long `targets`), teacher annealing at `progress` = step / total when `student.anneal`, or
    `kd_loss` with the student's `loss`, `temperature` and `alpha`. The student's `class_weights` (when set) weight
    the gold-label cross-entropy."""
    weights = getattr(student, "class_weights", None)
    weights = None if weights is None else torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
    if targets.dtype == torch.long:
        return F.cross_entropy(logits, targets, weight=weights)
    if student.anneal:
        return annealed_target_loss(logits, targets, gold, progress, student.temperature)
    return kd_loss(logits, targets, gold, student.loss, student.temperature, student.alpha, weights)
