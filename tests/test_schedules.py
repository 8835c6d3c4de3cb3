"""lambda(t) and the foundation learning rate (utils/schedules.py)."""

from __future__ import annotations

import math

import pytest

from utils.schedules import consistency_ramp, foundation_lr


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("gaussian", (math.exp(-5.0), math.exp(-1.25), 1.0)),
        ("linear", (0.0, 0.5, 1.0)),
        ("none", (1.0, 1.0, 1.0)),
    ],
)
def test_ramp_at_start_middle_end(kind: str, expected: tuple[float, float, float]) -> None:
    values = [consistency_ramp(t, 1000, kind) for t in (0, 500, 1000)]
    assert values == pytest.approx(list(expected), rel=1e-12)


def test_ramp_is_continuous_and_weighted() -> None:
    # Continuous (docs/METHOD.md item 1): neighbouring steps differ, unlike the reference's
    # 200-step staircase.
    assert consistency_ramp(301, 60000) > consistency_ramp(300, 60000)
    assert consistency_ramp(500, 1000, "gaussian", weight=2.0) == pytest.approx(2 * math.exp(-1.25))
    assert consistency_ramp(2000, 1000) == 1.0  # clipped past the end


def test_ramp_errors() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        consistency_ramp(0, 10, "sigmoid")
    with pytest.raises(ValueError, match="max_steps"):
        consistency_ramp(0, 0)


def test_constant_lr_with_and_without_warmup() -> None:
    assert foundation_lr(0, 1e-4, 100, 0, "constant") == 1e-4
    assert foundation_lr(99, 1e-4, 100, 0, "constant") == 1e-4
    # Linear warm-up (SAMed): base * (step + 1) / warmup.
    assert foundation_lr(0, 1e-4, 100, 10, "constant") == pytest.approx(1e-5)
    assert foundation_lr(4, 1e-4, 100, 10, "constant") == pytest.approx(5e-5)
    assert foundation_lr(10, 1e-4, 100, 10, "constant") == 1e-4


def test_poly_lr() -> None:
    assert foundation_lr(10, 1.0, 110, 10, "poly") == 1.0
    assert foundation_lr(60, 1.0, 110, 10, "poly") == pytest.approx(0.5**0.9)
    assert foundation_lr(110, 1.0, 110, 10, "poly") == 0.0
    assert foundation_lr(50, 1.0, 100, 0, "poly") == pytest.approx(0.5**0.9)


def test_lr_errors() -> None:
    with pytest.raises(ValueError, match="foundation_schedule"):
        foundation_lr(0, 1e-4, 100, 0, "cosine")
    with pytest.raises(ValueError, match="foundation_warmup"):
        foundation_lr(0, 1e-4, 100, -1, "constant")
    with pytest.raises(ValueError, match="foundation_warmup"):
        foundation_lr(100, 1e-4, 100, 100, "poly")
