"""Ground-truth diagnostics of the pseudo-labels (paper Fig. 6), computed by the loop after the
step from the labels the step returned: the step itself never sees unlabeled ground truth.

Every step adds, as device tensors (no read-back), the Dice of each teacher's and the ensemble's
pseudo-labels on the unlabeled batch, and the ensemble's pooled-Dice sums per domain
(:func:`pooled_dice_terms`); the logging interval's means of these become
``diag/pseudo_dice/<source>/<region>`` and
``diag/pseudo_dice_by_domain/ensemble/<domain>/<region>``.
"""

from __future__ import annotations

import torch

from dataloaders.specs import DatasetSpec
from engine.batches import UnlabeledTruth
from evaluation.metrics import region_masks
from method.batches import StepOutput

# Meter entry of the ensemble's per-domain pooled-Dice sums; PseudoLabelDice.by_domain turns its
# interval mean into Dice scalars.
DOMAIN_DICE_TERMS = "diag/pseudo_dice_terms"


class PseudoLabelDice:
    """The diagnostics of one dataset's regions and domains; see the module docstring."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.regions = [classes for _, classes in spec.eval_regions]

    def __call__(self, out: StepOutput, truth: UnlabeledTruth) -> dict[str, torch.Tensor]:
        """One step's diagnostics: 0-dim Dice per source and region, and the (3, G, R)
        :func:`pooled_dice_terms` of the ensemble under :data:`DOMAIN_DICE_TERMS`."""
        names = self.spec.region_names
        scalars = {}
        for source, labels in out.pseudo_labels.items():
            dice = pooled_region_dice(labels, truth.masks, self.regions)
            scalars.update({f"diag/pseudo_dice/{source}/{r}": dice[j] for j, r in enumerate(names)})
        if "ensemble" in out.pseudo_labels:
            scalars[DOMAIN_DICE_TERMS] = pooled_dice_terms(
                out.pseudo_labels["ensemble"],
                truth.masks,
                self.regions,
                truth.domains,
                len(self.spec.domains),
            )
        return scalars

    def by_domain(self, mean_terms: list[float]) -> dict[str, float]:
        """``diag/pseudo_dice_by_domain/ensemble/<domain>/<region>`` from the interval's mean
        :func:`pooled_dice_terms` (flat); domains without an unlabeled image in the interval are
        left out, and a region empty in both maps counts as Dice 1, as in the batch Dice."""
        domains = self.spec.domains
        terms = torch.tensor(mean_terms).reshape(3, len(domains), len(self.regions))
        overlap, sizes, images = terms
        dice = dice_from_terms(overlap, sizes)
        return {
            f"diag/pseudo_dice_by_domain/ensemble/{domain}/{region}": float(dice[g, j])
            for g, domain in enumerate(domains)
            for j, region in enumerate(self.spec.region_names)
            if images[g, j] > 0
        }


def pooled_region_dice(
    pred: torch.Tensor, target: torch.Tensor, regions: list[tuple[int, ...]]
) -> torch.Tensor:
    """Dice per region of label maps (B, H, W), pooled over the batch -> (R,); 1 if both empty.

    Not the per-sample, smoothed Dice of SMC (``method.smc.region_dice``): a diagnostic.
    """
    one_group = torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device)
    overlap, sizes, _ = pooled_dice_terms(pred, target, regions, one_group, 1)[:, 0]
    return dice_from_terms(overlap, sizes)


def dice_from_terms(overlap: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Pooled Dice from the sums of :func:`pooled_dice_terms` (2 |A ∩ B|, |A| + |B|, any equal
    shapes, means or sums alike); 1 where both maps are empty."""
    return torch.where(sizes > 0, overlap / sizes.clamp_min(1e-12), torch.ones_like(sizes))


def pooled_dice_terms(
    pred: torch.Tensor,
    target: torch.Tensor,
    regions: list[tuple[int, ...]],
    groups: torch.Tensor,
    num_groups: int,
) -> torch.Tensor:
    """The sums behind a pooled Dice, per group of images and region: (3, G, R) float.

    ``[0]`` = 2 |pred ∩ target| and ``[1]`` = |pred| + |target| in pixels, ``[2]`` = the number
    of images, each summed over the images of the group (``groups``: (B,) int64 in 0..G-1;
    label maps (B, H, W)). Summed over many batches, ``[0] / [1]`` is the Dice pooled over every
    image of a group seen, however the groups were spread over the batches.
    """
    a, b = region_masks(pred, regions), region_masks(target, regions)  # (B, R, H, W)
    inter = (a & b).sum((2, 3)).float()
    total = (a.sum((2, 3)) + b.sum((2, 3))).float()
    # (G, B) membership; not F.one_hot, whose range check reads values back on the CPU.
    members = (torch.arange(num_groups, device=groups.device)[:, None] == groups).float()
    sizes = members @ total  # (G, R)
    images = members.sum(1, keepdim=True).expand_as(sizes)
    return torch.stack([2 * members @ inter, sizes, images])
