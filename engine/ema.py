"""Mean Teacher exponential moving average, one utility for both teachers.

The decay follows the Mean Teacher warm-up of the reference, a = min(1 - 1/(step + 1), cap),
computed on the host from the integer step (no device read-back). The update runs as one fused
``torch._foreach_lerp_`` over all matched tensors (matched once: :func:`ema_tensors`).

Which tensors move: the student's *trainable* parameters (``requires_grad=True``), matched to the
teacher's by name. For the foundation model this is the LoRA factors, the mask decoder and the
prompt encoder, as in the reference; its frozen image encoder is identical in both models and is
left alone. BatchNorm running statistics (floating-point buffers) move only when asked
(``include_buffers=True``, the ``teacher_bn: running`` setting); the reference does not average
them because its teachers run in train mode and never use them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with every parameter frozen (``requires_grad=False``).

    The copy keeps the student's train/eval mode; the trainer sets the teacher's mode (the
    reference runs teachers in train mode, ``method.teacher_bn: batch``).
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


def ema_decay(step: int, decay_cap: float = 0.99) -> float:
    """Decay a = min(1 - 1/(step + 1), decay_cap); step 0 gives 0 (the teacher copies)."""
    if step < 0:
        raise ValueError(f"ema step must be >= 0, got {step}")
    return min(1.0 - 1.0 / (step + 1), decay_cap)


def _matched(
    named_teacher: dict[str, Tensor], named_student: list[tuple[str, Tensor]], what: str
) -> tuple[list[Tensor], list[Tensor]]:
    teacher_tensors, student_tensors = [], []
    for name, tensor in named_student:
        if name not in named_teacher:
            raise ValueError(f"ema_update: the teacher has no {what} named {name!r}")
        target = named_teacher[name]
        if target.shape != tensor.shape or target.dtype != tensor.dtype:
            raise ValueError(
                f"ema_update: {what} {name!r} is {tuple(target.shape)} {target.dtype} in the "
                f"teacher but {tuple(tensor.shape)} {tensor.dtype} in the student"
            )
        teacher_tensors.append(target)
        student_tensors.append(tensor)
    return teacher_tensors, student_tensors


@dataclass(frozen=True)
class EmaTensors:
    """The matched tensors one EMA update moves, teacher's and student's in the same order.

    Matching walks both modules' names; the tensors themselves never change identity (optimizers
    and ``load_state_dict`` write into them), so the trainer matches once and keeps this, rather
    than walking every module of both networks on every step.
    """

    teacher: list[Tensor]
    student: list[Tensor]


def ema_tensors(
    teacher: nn.Module, student: nn.Module, *, include_buffers: bool = False
) -> EmaTensors:
    """The student's trainable parameters (and, with ``include_buffers``, its floating-point
    buffers) matched by name to the teacher's.

    Raises:
        ValueError: if a student tensor has no same-named, same-shaped teacher tensor.
    """
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    teacher_t, student_t = _matched(dict(teacher.named_parameters()), trainable, "parameter")
    if include_buffers:
        buffers = [(n, b) for n, b in student.named_buffers() if b.is_floating_point()]
        more_t, more_s = _matched(dict(teacher.named_buffers()), buffers, "buffer")
        teacher_t += more_t
        student_t += more_s
    return EmaTensors(teacher_t, student_t)


@torch.no_grad()
def ema_lerp(tensors: EmaTensors, step: int, decay_cap: float = 0.99) -> float:
    """In-place teacher <- a * teacher + (1 - a) * student over matched tensors; returns a."""
    decay = ema_decay(step, decay_cap)
    if tensors.teacher:
        # lerp(t, s, w) = t + w (s - t) with w = 1 - a; torch evaluates w >= 0.5 as
        # s - (s - t)(1 - w), so step 0 (w = 1) copies the student exactly.
        torch._foreach_lerp_(tensors.teacher, tensors.student, 1.0 - decay)
    return decay


def ema_update(
    teacher: nn.Module,
    student: nn.Module,
    step: int,
    decay_cap: float = 0.99,
    *,
    include_buffers: bool = False,
) -> float:
    """In-place teacher <- a * teacher + (1 - a) * student.

    Args:
        teacher: the EMA model (same architecture and names as the student).
        student: the trained model; only its ``requires_grad=True`` parameters are averaged.
        step: iteration index before the increment (0-based), as the reference's ``iter_num``.
        decay_cap: upper bound of a (``optim.ema_decay``).
        include_buffers: also average the floating-point buffers (BatchNorm running mean/var);
            integer buffers such as ``num_batches_tracked`` are never touched.

    Returns:
        The decay a that was used.

    Raises:
        ValueError: if a student tensor has no same-named, same-shaped teacher tensor.
    """
    tensors = ema_tensors(teacher, student, include_buffers=include_buffers)
    return ema_lerp(tensors, step, decay_cap)
