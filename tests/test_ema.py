"""Mean Teacher EMA (engine/ema.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.ema import ema_decay, ema_update, make_teacher


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)


def _pair() -> tuple[Net, Net]:
    torch.manual_seed(0)
    student = Net()
    teacher = make_teacher(student)
    # Give the teacher different values everywhere, so every update is visible.
    for t in list(teacher.parameters()) + list(teacher.buffers()):
        if t.is_floating_point():
            t.data.add_(1.0)
    teacher.bn.num_batches_tracked.fill_(7)
    return student, teacher


def test_make_teacher_is_a_frozen_copy() -> None:
    student = Net()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert student.conv.weight.requires_grad  # the student is untouched
    assert torch.equal(teacher.conv.weight, student.conv.weight)
    assert teacher.conv.weight.data_ptr() != student.conv.weight.data_ptr()


def test_decay_rule() -> None:
    assert ema_decay(0) == 0.0
    assert ema_decay(1) == 0.5
    assert ema_decay(5) == pytest.approx(1 - 1 / 6)
    assert ema_decay(99) == pytest.approx(0.99)
    assert ema_decay(10_000) == 0.99
    with pytest.raises(ValueError):
        ema_decay(-1)


def test_step_zero_copies_the_student_exactly() -> None:
    student, teacher = _pair()
    assert ema_update(teacher, student, 0) == 0.0
    assert torch.equal(teacher.conv.weight, student.conv.weight)
    assert torch.equal(teacher.bn.bias, student.bn.bias)


def test_step_five_formula_and_untouched_tensors() -> None:
    student, teacher = _pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    a = ema_update(teacher, student, 5, 0.99)
    assert a == pytest.approx(1 - 1 / 6)
    expected = a * before["conv.weight"] + (1 - a) * student.conv.weight
    torch.testing.assert_close(teacher.conv.weight, expected)
    # Frozen parameters and (by default) buffers keep the teacher's own values.
    assert torch.equal(teacher.frozen.weight, before["frozen.weight"])
    assert torch.equal(teacher.bn.running_mean, before["bn.running_mean"])


def test_buffers_only_when_asked() -> None:
    student, teacher = _pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 1, include_buffers=True)
    expected = 0.5 * before["bn.running_var"] + 0.5 * student.bn.running_var
    torch.testing.assert_close(teacher.bn.running_var, expected)
    assert teacher.bn.num_batches_tracked.item() == 7  # integer buffers are never averaged
    assert torch.equal(teacher.frozen.weight, before["frozen.weight"])


def test_cap() -> None:
    student, teacher = _pair()
    before = teacher.conv.bias.clone()
    a = ema_update(teacher, student, 1000, decay_cap=0.9)
    assert a == 0.9
    torch.testing.assert_close(teacher.conv.bias, 0.9 * before + 0.1 * student.conv.bias)


def test_mismatched_teacher_is_an_error() -> None:
    student = Net()
    other = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="conv.weight"):
        ema_update(other, student, 3)


def test_tensors_matched_once_update_as_the_modules_do():
    """The trainer matches the tensors once (ema_tensors) and lerps them every step; that equals
    ema_update on the modules, also after load_state_dict wrote new values into the student."""
    from engine.ema import ema_lerp, ema_tensors

    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    by_modules, by_tensors = make_teacher(student), make_teacher(student)
    tensors = ema_tensors(by_tensors, student, include_buffers=True)
    for step in range(3):
        student.load_state_dict({k: v + 1 for k, v in student.state_dict().items()})
        ema_update(by_modules, student, step, include_buffers=True)
        ema_lerp(tensors, step)
    for a, b in zip(by_modules.state_dict().values(), by_tensors.state_dict().values()):
        torch.testing.assert_close(a, b)
