"""Knowledge distillation (Hinton et al., 2015) as a ``loss_fn`` for :func:`deepinfo.toolkit.training.train`.

The student is trained on

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with ``s`` the student's logits, ``t`` the teacher's logits on the *same* (augmented) batch, ``T``
the temperature and ``y`` the labels. The KL term is summed over classes and averaged over the
batch (``reduction="batchmean"``), the cross-entropy averaged over the batch, so both are per
image. The ``T^2`` keeps the soft term's gradient, ``alpha * T * (softmax(s/T) - softmax(t/T)) / B``
per logit, on the scale of the hard term's as the temperature changes (Hinton et al., Sec. 2).

The teacher is only read: it runs in eval mode (fixed batch-norm statistics, no dropout) under
``torch.no_grad``, none of its parameters is in the student's optimizer, and its weights,
buffers and ``requires_grad`` flags are never changed. It must sit on the device of the batches
(:func:`deepinfo.toolkit.training.train` moves only the student).

Public names: :func:`distillation_loss` (the ``loss_fn``), :func:`hinton_loss` (the loss of one
batch of logits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepinfo.toolkit.training import LossFn

__all__ = ["distillation_loss", "hinton_loss"]


def _check_settings(temperature: float, alpha: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the distillation term), got {alpha!r}")


def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                temperature: float, alpha: float) -> torch.Tensor:
    """The distillation loss of one batch (a scalar tensor, nats per image).

    Args:
        student_logits: ``[B, K]``, differentiable.
        teacher_logits: ``[B, K]``, treated as constants (detached here).
        labels: ``[B]`` class indices in ``0..K-1``.
        temperature: ``T > 0``; both distributions are ``softmax(logits / T)``.
        alpha: weight of the distillation term in ``[0, 1]``; ``1 - alpha`` weighs the
            cross-entropy with the labels (``alpha = 0`` is plain cross-entropy).

    Returns:
        ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``, KL summed over
        classes and both terms averaged over the batch.
    """
    _check_settings(temperature, alpha)
    if student_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be [B, K] of the same shape, got student "
            f"{tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)} (same number of "
            f"classes needed: train the teacher on the student's data set)"
        )
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must be [B] = [{student_logits.shape[0]}], got {tuple(labels.shape)}")
    T = float(temperature)
    hard = F.cross_entropy(student_logits, labels.long())
    if alpha == 0:
        return hard
    log_p_student = F.log_softmax(student_logits / T, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / T, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * T * T * soft + (1 - alpha) * hard


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """A ``loss_fn(model, batch) -> (loss, logits)`` that distils ``teacher`` into ``model``.

    Plug it into :func:`deepinfo.toolkit.training.train` (or ``deepinfo.book.experiments.cub_model(...,
    loss_fn=...)``): ``batch = (images [B, C, H, W], labels [B], *rest)`` is the augmented batch the
    student sees, and the teacher's logits are computed on exactly those images. The returned
    logits are the student's (so training accuracy is the student's).

    Args:
        teacher: a trained classifier over the student's classes, on the device of the batches.
            It is switched to eval mode here (and kept there: a call that finds it in train mode
            puts it back in eval mode), run under ``torch.no_grad``, and never modified otherwise.
        temperature: ``T > 0`` (Hinton et al.: 1-20; 4 is common).
        alpha: weight of the distillation term in ``[0, 1]``.

    Raises:
        ValueError: a bad temperature or alpha, a teacher that is not an ``nn.Module``, or (when
            called) teacher and student logits of different shapes, or the student itself given
            as teacher.
    """
    _check_settings(temperature, alpha)
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    teacher.eval()

    def loss_fn(model: nn.Module, batch: Sequence[Any]):
        if model is teacher:
            raise ValueError("distillation_loss: the student is the teacher itself")
        images, labels = batch[0], batch[1]
        if teacher.training:  # someone switched it back: batch-norm statistics must stay fixed
            teacher.eval()
        with torch.no_grad():
            teacher_logits = teacher(images)
        student_logits = model(images)
        return hinton_loss(student_logits, teacher_logits, labels, temperature, alpha), student_logits

    return loss_fn
