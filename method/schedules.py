"""The method's schedule: the unsupervised weight lambda(t) (and the phase t that the "linear"
alpha strategy reads). Pure host-side functions of the iteration index (0-based, counted before
the increment, as the reference) returning a Python float; they never touch a tensor.

Every schedule spans a fixed horizon in iterations (by default the paper's run length for the
dataset), never the length of the run at hand: a short run is the first part of the paper's
schedule, not a different schedule (docs/METHOD.md lists each one; the learning-rate schedule is
the engine's, :mod:`engine.optim`).
"""

from __future__ import annotations

import math

RAMP_KINDS = ("gaussian", "linear", "none")


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
