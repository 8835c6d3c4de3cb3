"""Finite guards: a diverging run stops before it writes a checkpoint or an evaluation of nan.

A non-finite value is found at the next log (every ``train.log_interval`` steps, on the sums the
log reads anyway) or before the next evaluation or checkpoint, whichever comes first: the weights
may hold nan for up to that many steps, but no checkpoint or evaluation ever does
(docs/RELIABILITY.md).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.meter import ScalarMeter


class DivergedError(RuntimeError):
    """A loss term or a weight is not finite: the run stopped before saving anything from it."""


def nonfinite_losses(meter: ScalarMeter, step: int) -> str | None:
    """What is not finite among the scalars added since the meter's last read, naming the first
    step and the terms (one host transfer); None while everything is finite."""
    bad, finite_steps = meter.nonfinite()
    if not bad:
        return None
    first = step - meter.steps + finite_steps + 1
    terms = ", ".join(f"{name}={value}" for name, value in bad.items())
    return f"a loss term is not finite from step {first} on: {terms} at step {step}"


def nonfinite_weights(state: dict[str, Any], step: int) -> str | None:
    """Which models of a checkpoint ``state`` hold a non-finite floating-point tensor (a step
    with a finite loss can still leave inf weights behind); None if all are finite."""
    tensors = [
        (name, tensor)
        for name, weights in state["models"].items()
        for tensor in (weights or {}).values()
        if tensor.is_floating_point()
    ]
    if not tensors:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
    bad = dict.fromkeys(name for (name, _), ok in zip(tensors, finite) if not ok)
    return f"weights of {', '.join(bad)} not finite after step {step}" if bad else None


def diverged(what: str, log_interval: int, saved_step: int | None) -> DivergedError:
    """The error that stops the run, saying what the checkpoints folder still holds."""
    kept = "no checkpoint was written"
    if saved_step is not None:
        kept = f"checkpoints/ left as they were (last.pt: step {saved_step})"
    return DivergedError(
        f"training diverged: {what} (checked every train.log_interval={log_interval} steps and "
        f"before each checkpoint); {kept}"
    )
