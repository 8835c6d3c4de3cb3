"""Segmentation losses of SynFoC: (masked) cross-entropy, (masked) soft Dice and the CDCR terms.

All functions take raw logits or probabilities with K = C + 1 channels (channel 0 = background)
and integer class-index targets, compute in float32 whatever the input dtype (they are called
under ``torch.autocast``), and return a 0-dim float32 tensor. They never read values back to the
host, so they can run every iteration on the GPU without a synchronisation.

Reductions follow the reference implementation: the masked cross-entropy is averaged over
*all* pixels, not over the confident ones; the soft Dice sums over the whole batch; the CDCR
means run over every element of their (B, K, H, W) maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Smoothing of the soft Dice (reference DiceLossWithMask).
DICE_EPS = 1e-10
# Probabilities are clamped to [PROB_MIN, 1] inside log() so that 0 * log 0 stays 0, not NaN.
PROB_MIN = 1e-10


def _check_target(logits: Tensor, target: Tensor, mask: Tensor | None) -> None:
    """Shape checks only (host metadata, no device read-back)."""
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (B, K, H, W) and target (B, H, W); got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    if mask is not None and mask.shape != target.shape:
        raise ValueError(f"expected mask {tuple(target.shape)}, got {tuple(mask.shape)}")


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    """One-hot encoding without the value checks of ``F.one_hot`` (which read back on the CPU).

    Args:
        target: (B, H, W) int64 class indices in [0, num_classes).
        num_classes: K.

    Returns:
        (B, K, H, W) float32 in {0, 1}.
    """
    classes = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1)
    return (target.unsqueeze(1) == classes).float()


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pixel-wise cross-entropy, optionally weighted by a confidence mask.

    Args:
        logits: (B, K, H, W) raw scores, any float dtype.
        target: (B, H, W) int64 class indices in [0, K).
        mask: (B, H, W) weights in [0, 1] (the confidence mask W), or None for all ones.

    Returns:
        0-dim float32: mean over all B*H*W pixels of CE * mask. As the reference, the sum is
        divided by the pixel count, not by ``mask.sum()``: few confident pixels, small loss.
    """
    _check_target(logits, target, mask)
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    if mask is not None:
        ce = ce * mask.float()
    return ce.mean()


def masked_dice_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Batch-level soft Dice loss with squared denominators (reference ``DiceLossWithMask``).

    For each class k (background included), with P = softmax(logits), T = one-hot(target) and
    sums over the batch and all pixels:
    ``L_k = 1 - (2 sum(P_k T_k M) + eps) / (sum(P_k^2 M) + sum(T_k^2 M) + eps)``; the loss is the
    mean of L_k over the K classes. The mask M weights every class, background included (the
    reference forgot it for background; docs/METHOD.md item 5), so an all-zero mask gives exactly 0.

    Args:
        logits: (B, K, H, W) raw scores, any float dtype.
        target: (B, H, W) int64 class indices in [0, K).
        mask: (B, H, W) weights in [0, 1], or None for all ones.

    Returns:
        0-dim float32 in [0, 1].
    """
    _check_target(logits, target, mask)
    probs = logits.float().softmax(dim=1)
    onehot = one_hot(target, logits.shape[1])
    weight = torch.ones_like(probs[:, :1]) if mask is None else mask.float().unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * onehot * weight).sum(dims)
    denominator = (probs.square() * weight).sum(dims) + (onehot * weight).sum(dims)
    per_class = 1 - (2 * intersection + DICE_EPS) / (denominator + DICE_EPS)
    return per_class.mean()


def supervised_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CE + soft Dice on labeled data (paper Eq. 2, one model's L_x). Shapes as above."""
    return masked_cross_entropy(logits, target) + masked_dice_loss(logits, target)


def unsupervised_loss(logits: Tensor, pseudo_label: Tensor, mask: Tensor) -> Tensor:
    """Masked CE + masked soft Dice against pseudo-labels (paper Eq. 7, one model's L_u).

    Args:
        logits: (B, K, H, W) student logits on the mixed image.
        pseudo_label: (B, H, W) int64 pseudo-label (ground truth inside the pasted box).
        mask: (B, H, W) float32 confidence mask in {0, 1} (1 inside the box).
    """
    return masked_cross_entropy(logits, pseudo_label, mask) + masked_dice_loss(
        logits, pseudo_label, mask
    )


def _entropy_map(probs: Tensor) -> Tensor:
    """Element-wise -P log P, (B, K, H, W) float32; 0 where P underflowed to 0."""
    return -probs * probs.clamp(PROB_MIN, 1.0).log()


def resize_nearest(x: Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize of (B, C, H, W) float maps to (B, C, size, size) (torch rule)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="nearest")


def _align_foundation(prob_foundation: Tensor, prob_unet: Tensor) -> tuple[Tensor, Tensor]:
    """Foundation probabilities nearest-resized to the U-Net size, and the shape check."""
    if prob_foundation.shape[:2] != prob_unet.shape[:2]:
        raise ValueError(
            f"expected probabilities with the same (B, K); got {tuple(prob_foundation.shape)} "
            f"and {tuple(prob_unet.shape)}"
        )
    return resize_nearest(prob_foundation.float(), prob_unet.shape[-1]), prob_unet.float()


def consensus_divergence_losses(
    prob_foundation: Tensor, prob_unet: Tensor
) -> tuple[Tensor, Tensor]:
    """CDCR (paper Eq. 8-10) as the reference codes it (docs/METHOD.md items 2-4).

    P_f is nearest-upsampled to the U-Net size (the reference uses nearest here, bilinear in the
    teacher ensemble). The consensus mask is M_c = [argmax P_f_up == argmax P_u] at the U-Net size,
    nearest-resized to the foundation size for the foundation term; M_d = 1 - M_c.

    ``L_c = 0.5 * (mean(-P_f log P_f * M_c_f) + mean(-P_u log P_u * M_c))`` (each mean over all
    B*K*H*W elements at the model's own resolution; the factor 0.5 is the reference's).
    ``L_d = mean((P_f_up - P_u)^2 * M_d)`` at the U-Net size, minimised (the paper's leading minus
    is a typo). Nothing is detached: both terms train both students.

    Args:
        prob_foundation: (B, K, Sl, Sl) softmax of the foundation student on the mixed image.
        prob_unet: (B, K, p, p) softmax of the U-Net student on the mixed image.

    Returns:
        (L_c, L_d), 0-dim float32, both >= 0.
    """
    prob_f_up, prob_u = _align_foundation(prob_foundation, prob_unet)
    consensus = (prob_f_up.argmax(1) == prob_u.argmax(1)).float().unsqueeze(1)
    consensus_f = resize_nearest(consensus, prob_foundation.shape[-1])
    loss_c = 0.5 * (
        (_entropy_map(prob_foundation.float()) * consensus_f).mean()
        + (_entropy_map(prob_u) * consensus).mean()
    )
    loss_d = ((prob_f_up - prob_u).square() * (1 - consensus)).mean()
    return loss_c, loss_d


def consistency_mse(prob_foundation: Tensor, prob_unet: Tensor) -> Tensor:
    """Plain consistency (paper Table 7 "+CR"): mean((P_f_up - P_u)^2) over all elements.

    Same inputs and nearest upsampling as :func:`consensus_divergence_losses`; 0-dim float32.
    """
    prob_f_up, prob_u = _align_foundation(prob_foundation, prob_unet)
    return (prob_f_up - prob_u).square().mean()
