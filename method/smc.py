"""Self-Mutual Confidence (paper Eq. 3-6): the confidences, the ensemble weight alpha, the
ensembled probabilities and the thresholded pseudo-labels.

All functions are pure tensor maps on the device (no host read-back). Notation (paper -> code):
Phi^s, Phi^m = :func:`self_confidence`, :func:`mutual_confidence`; alpha = :func:`ensemble_alpha`;
P^EN = :func:`ensemble_probs`; W = the mask of :func:`pseudo_label`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Additive terms of the reference's smoothed Dice (``dice_coefficient_numpy``).
SMC_SMOOTH_NUM = 1.0
SMC_SMOOTH_DEN = 1.001


# --------------------------------------------------------------------------- SMC (Eq. 4-6)


def _in_region(labels: Tensor, classes: Sequence[int]) -> Tensor:
    # Scalar comparisons: no host-to-device copy of the class list.
    return reduce(torch.logical_or, [labels == int(c) for c in classes])


def region_dice(a: Tensor, b: Tensor, regions: Sequence[Sequence[int]]) -> Tensor:
    """Per-sample smoothed Dice between two label maps, averaged over regions (SMC, paper Eq. 4-5).

    For each region (a union of class indices, e.g. fundus cup {1} and disc {1, 2}):
    1 if both maps miss the region, else (2|A & B| + 1) / (|A| + |B| + 1.001), as the reference's
    ``dice_coefficient_numpy``.

    Args:
        a, b: (B, H, W) int64 class-index maps of the same shape.
        regions: one sequence of class indices per region (``spec.eval_regions``' classes).

    Returns:
        (B,) float32 in (0, 1].
    """
    if a.shape != b.shape:
        raise ValueError(f"region_dice: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if not regions or not all(
        len(r) > 0 and all(isinstance(c, (int, np.integer)) for c in r) for r in regions
    ):
        raise ValueError(
            f"regions must be non-empty sequences of class indices, e.g. "
            f"[classes for _, classes in spec.eval_regions]; got {regions!r}"
        )
    scores = []
    for classes in regions:
        in_a, in_b = _in_region(a, classes), _in_region(b, classes)
        intersection = (in_a & in_b).sum((1, 2)).float()
        total = in_a.sum((1, 2)).float() + in_b.sum((1, 2)).float()
        dice = (2 * intersection + SMC_SMOOTH_NUM) / (total + SMC_SMOOTH_DEN)
        scores.append(torch.where(total == 0, torch.ones_like(dice), dice))
    return torch.stack(scores).mean(0)


def resize_labels(labels: Tensor, size: int) -> Tensor:
    """Nearest resize of (B, H, W) int64 label maps to (B, size, size) (torch ``nearest`` rule)."""
    if labels.shape[-1] == size and labels.shape[-2] == size:
        return labels
    resized = F.interpolate(labels.unsqueeze(1).float(), size=(size, size), mode="nearest")
    return resized.squeeze(1).long()


def self_confidence(student: Tensor, teacher: Tensor, regions: Sequence[Sequence[int]]) -> Tensor:
    """Phi^s (Eq. 4): Dice of the student and teacher U-Net argmax maps (B, p, p) -> (B,)."""
    return region_dice(student, teacher, regions)


def mutual_confidence(
    unet_teacher: Tensor, foundation_teacher: Tensor, regions: Sequence[Sequence[int]]
) -> Tensor:
    """Phi^m (Eq. 5): Dice of the teacher U-Net map (B, p, p), nearest-resized to the foundation
    logits size, and the teacher foundation map (B, Sl, Sl) -> (B,)."""
    return region_dice(
        resize_labels(unet_teacher, foundation_teacher.shape[-1]), foundation_teacher, regions
    )


def ensemble_alpha(
    strategy: str,
    phi_self: Tensor | None,
    phi_mutual: Tensor,
    *,
    progress: float | Tensor = 0.0,
    constant: float = 0.5,
) -> Tensor:
    """Per-sample weight alpha of the U-Net teacher in the ensemble (Eq. 6, Table 8).

    ``smc`` = Phi^s * Phi^m; ``self`` = Phi^s; ``mutual`` = Phi^m; ``linear`` = progress
    (t / t_max, the U-Net's weight grows with training); ``constant`` = ``constant``. ``cps`` has
    no single alpha (each student learns from the other's teacher) and is handled by the step.

    Args:
        phi_self: (B,) or None when the strategy does not need it.
        phi_mutual: (B,) (also gives the batch shape and device).

    Returns:
        (B,) float32 in [0, 1].
    """
    if strategy == "smc":
        return phi_self * phi_mutual
    if strategy == "self":
        return phi_self
    if strategy == "mutual":
        return phi_mutual
    if strategy == "linear":  # progress a float or a 0-dim tensor (the compiled step's input)
        return torch.zeros_like(phi_mutual).add(progress).clamp(0.0, 1.0)
    if strategy == "constant":
        return torch.full_like(phi_mutual, constant)
    raise ValueError(f"ensemble_alpha: no per-sample alpha for strategy {strategy!r}")


# ---------------------------------------------------------------- ensemble and pseudo-labels


def softmax(logits: Tensor) -> Tensor:
    """Class probabilities in float32 (autocast-safe), (B, K, H, W)."""
    return logits.float().softmax(dim=1)


def resize_probs(probs: Tensor, size: int) -> Tensor:
    """Bilinear (align_corners=False) resize of (B, K, H, W) maps, as the reference ensemble."""
    if probs.shape[-1] == size and probs.shape[-2] == size:
        return probs
    return F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)


def ensemble_probs(
    prob_unet: Tensor | None, prob_foundation: Tensor | None, alpha: Tensor | float
) -> Tensor:
    """P^EN = alpha * P^UT + (1 - alpha) * P^MS (Eq. 3), both at the same size.

    Args:
        prob_unet: (B, K, H, W) U-Net teacher probabilities (None allowed when alpha is 0.0).
        prob_foundation: (B, K, H, W) foundation teacher probabilities resized to H (None
            allowed when alpha is 1.0).
        alpha: (B,) per-sample weights, or a float 0.0 / 1.0 for a single teacher.
    """
    if isinstance(alpha, float):
        if alpha == 1.0:
            return prob_unet
        if alpha == 0.0:
            return prob_foundation
        return alpha * prob_unet + (1.0 - alpha) * prob_foundation
    weight = alpha.view(-1, 1, 1, 1)
    return weight * prob_unet + (1.0 - weight) * prob_foundation


def pseudo_label(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Argmax pseudo-label and confidence mask W = [max prob > threshold] (strict, as the code).

    Args:
        probs: (B, K, H, W) float32 probabilities.

    Returns:
        labels (B, H, W) int64 and mask (B, H, W) float32 in {0, 1}.
    """
    confidence, labels = probs.max(dim=1)
    return labels, (confidence > threshold).float()
