"""The two optimizers of a run and the foundation model's learning-rate schedule.

SGD for the U-Net and AdamW for the foundation model's trainable tensors (paper 4.1). The
U-Net's learning rate is constant (as the reference); the foundation model's follows
:func:`foundation_lr` over a fixed horizon (``optim.foundation_schedule_iterations``, by default
the paper's run length), never the length of the run at hand (docs/METHOD.md).
"""

from __future__ import annotations

import torch

from engine.config import Config, OptimConfig
from method.batches import Models

LR_SCHEDULES = ("constant", "poly")
# Exponent of the polynomial decay (SAMed's poly schedule).
POLY_POWER = 0.9


def build_optimizers(models: Models, config: Config) -> dict[str, torch.optim.Optimizer]:
    """``{"unet": SGD, "foundation": AdamW}`` for the students that ``models`` holds."""
    optim, optimizers = config.optim, {}
    if models.unet is not None:
        optimizers["unet"] = torch.optim.SGD(
            models.unet.parameters(),
            lr=optim.unet_lr,
            momentum=optim.unet_momentum,
            weight_decay=optim.unet_weight_decay,
        )
    if models.foundation is not None:
        params = [p for p in models.foundation.parameters() if p.requires_grad]
        optimizers["foundation"] = torch.optim.AdamW(
            params,
            lr=optim.foundation_lr,
            betas=optim.foundation_betas,
            weight_decay=optim.foundation_weight_decay,
            fused=params[0].is_cuda,
        )
    return optimizers


def set_learning_rates(
    optimizers: dict[str, torch.optim.Optimizer], step: int, optim: OptimConfig, horizon: int
) -> None:
    """The foundation optimizer's learning rate for ``step`` (:func:`foundation_lr`)."""
    if "foundation" not in optimizers:
        return
    lr = foundation_lr(
        step, optim.foundation_lr, horizon, optim.foundation_warmup, optim.foundation_schedule
    )
    for group in optimizers["foundation"].param_groups:
        group["lr"] = lr


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
