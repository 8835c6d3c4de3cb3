"""Pure host-side schedules of the training loop: the unsupervised weight lambda(t) and the
foundation model's learning rate. Both take the iteration index (0-based, counted before the
increment, as the reference) and return a Python float; they never touch a tensor.

Every schedule spans a fixed horizon in iterations (by default the paper's run length for the
dataset), never the length of the run at hand: a short run is the first part of the paper's
schedule, not a different schedule (docs/METHOD.md lists each one).
"""

from __future__ import annotations

import math

RAMP_KINDS = ("gaussian", "linear", "none")
LR_SCHEDULES = ("constant", "poly")
# Exponent of the polynomial decay (SAMed's poly schedule).
POLY_POWER = 0.9


def ramp_phase(step: int, horizon: int, stairs: int = 0) -> float:
    """Phase t in [0, 1] of a schedule that spans ``horizon`` iterations.

    ``stairs`` = 0: t = step / horizon (continuous). ``stairs`` = N > 0: the reference's staircase,
    t = floor(step / (horizon / N)) / N, which changes every horizon / N iterations (150 for its
    30k runs with N = 200). Both are clipped to [0, 1], so a run longer than the horizon stays at
    the end value and a shorter one never reaches it.

    Raises:
        ValueError: for a non-positive horizon or a negative number of stairs.
    """
    if horizon <= 0:
        raise ValueError(f"schedule horizon must be > 0 iterations, got {horizon}")
    if stairs < 0:
        raise ValueError(f"method.ramp_stairs must be >= 0 (0 = continuous), got {stairs}")
    t = step / horizon if stairs == 0 else math.floor(step / (horizon / stairs)) / stairs
    return min(max(t, 0.0), 1.0)


def consistency_ramp(
    step: int, horizon: int, kind: str = "gaussian", weight: float = 1.0, stairs: int = 0
) -> float:
    """Weight lambda(t) of the unsupervised and CDCR losses (paper Eq. 2).

    With t = :func:`ramp_phase` (step, horizon, stairs): ``gaussian`` = weight * exp(-5 (1 - t)^2)
    (the reference's ``sigmoid_rampup``); ``linear`` = weight * t; ``none`` = weight. The horizon
    is ``method.ramp_iterations`` (default: the paper's run length for the dataset), not the
    length of the run at hand, so a shortened run follows the first part of the paper's schedule
    instead of a compressed copy of it (docs/METHOD.md, item 1).

    Args:
        step: current iteration, 0-based, counted before the increment (as the reference).
        horizon: iterations over which the ramp reaches ``weight``, > 0.
        kind: one of ``RAMP_KINDS``.
        weight: value at the end of the ramp (``method.consistency_weight``).
        stairs: 0 = continuous; N = the reference's N-step staircase (it uses 200).

    Returns:
        lambda(step) in [0, weight].

    Raises:
        ValueError: for an unknown kind, a non-positive horizon or negative stairs.
    """
    t = ramp_phase(step, horizon, stairs)
    if kind == "gaussian":
        return weight * math.exp(-5.0 * (1.0 - t) ** 2)
    if kind == "linear":
        return weight * t
    if kind == "none":
        return weight
    raise ValueError(f"method.ramp: unknown kind {kind!r}; expected one of {', '.join(RAMP_KINDS)}")


def foundation_lr(step: int, base_lr: float, horizon: int, warmup: int, schedule: str) -> float:
    """Learning rate of the foundation model's AdamW at ``step``.

    Linear warm-up over the first ``warmup`` steps (SAMed: base_lr * (step + 1) / warmup), then
    ``constant`` = base_lr (the reference: no warm-up, constant) or ``poly`` =
    base_lr * (1 - (step - warmup) / (horizon - warmup))^0.9, which reaches 0 at the horizon and
    stays there. (SAMed divides by the horizon instead, so its lr never quite reaches 0.)

    Args:
        step: current iteration, 0-based.
        base_lr: peak learning rate (``optim.foundation_lr``).
        horizon: iterations over which ``poly`` decays (``optim.foundation_schedule_iterations``,
            default the paper's run length), independent of the run's own length.
        warmup: warm-up iterations (``optim.foundation_warmup``), 0 for none.
        schedule: one of ``LR_SCHEDULES``.

    Raises:
        ValueError: for an unknown schedule, a negative warm-up or warmup >= horizon with poly.
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
    if horizon <= warmup:
        raise ValueError(
            f"optim.foundation_warmup ({warmup}) must be smaller than the schedule's horizon "
            f"({horizon} iterations) for the poly schedule"
        )
    remaining = 1.0 - (step - warmup) / (horizon - warmup)
    return base_lr * max(remaining, 0.0) ** POLY_POWER
