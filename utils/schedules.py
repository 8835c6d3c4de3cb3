"""Pure host-side schedules of the training loop: the unsupervised weight lambda(t) and the
foundation model's learning rate. Both take the iteration index (0-based, counted before the
increment, as the reference) and return a Python float; they never touch a tensor.
"""

from __future__ import annotations

import math

RAMP_KINDS = ("gaussian", "linear", "none")
LR_SCHEDULES = ("constant", "poly")
# Exponent of the polynomial decay (SAMed's poly schedule).
POLY_POWER = 0.9


def consistency_ramp(
    step: int, max_steps: int, kind: str = "gaussian", weight: float = 1.0
) -> float:
    """Weight lambda(t) of the unsupervised and CDCR losses (paper Eq. 2).

    With t = clip(step / max_steps, 0, 1):
    ``gaussian`` = weight * exp(-5 (1 - t)^2), the reference's sigmoid ramp-up evaluated
    continuously over the whole run (the reference quantises t into 200 stairs; see
    docs/METHOD.md item 1); ``linear`` = weight * t; ``none`` = weight.

    Args:
        step: current iteration, 0-based.
        max_steps: iterations of the whole run (the ramp ends there), > 0.
        kind: one of ``RAMP_KINDS``.
        weight: value at the end of the ramp (``method.consistency_weight``).

    Returns:
        lambda(step) in [0, weight].

    Raises:
        ValueError: for an unknown kind or a non-positive max_steps.
    """
    if max_steps <= 0:
        raise ValueError(f"consistency_ramp: max_steps must be > 0, got {max_steps}")
    t = min(max(step / max_steps, 0.0), 1.0)
    if kind == "gaussian":
        return weight * math.exp(-5.0 * (1.0 - t) ** 2)
    if kind == "linear":
        return weight * t
    if kind == "none":
        return weight
    raise ValueError(f"method.ramp: unknown kind {kind!r}; expected one of {', '.join(RAMP_KINDS)}")


def foundation_lr(step: int, base_lr: float, max_steps: int, warmup: int, schedule: str) -> float:
    """Learning rate of the foundation model's AdamW at ``step``.

    Linear warm-up over the first ``warmup`` steps (SAMed: base_lr * (step + 1) / warmup), then
    ``constant`` = base_lr (the reference: no warm-up, constant) or ``poly`` =
    base_lr * (1 - (step - warmup) / (max_steps - warmup))^0.9, which reaches 0 at max_steps.
    (SAMed divides by max_steps instead, so its lr never quite reaches 0; ours spans the rest of
    the run.)

    Args:
        step: current iteration, 0-based.
        base_lr: peak learning rate (``optim.foundation_lr``).
        max_steps: iterations of the whole run.
        warmup: warm-up iterations (``optim.foundation_warmup``), 0 for none.
        schedule: one of ``LR_SCHEDULES``.

    Raises:
        ValueError: for an unknown schedule, a negative warm-up or warmup >= max_steps with poly.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(
            f"optim.foundation_schedule: unknown {schedule!r}; "
            f"expected one of {', '.join(LR_SCHEDULES)}"
        )
    if warmup < 0:
        raise ValueError(f"optim.foundation_warmup must be >= 0, got {warmup}")
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if max_steps <= warmup:
        raise ValueError(
            f"optim.foundation_warmup ({warmup}) must be smaller than the run ({max_steps} "
            "iterations) for the poly schedule"
        )
    remaining = 1.0 - (step - warmup) / (max_steps - warmup)
    return base_lr * max(remaining, 0.0) ** POLY_POWER
