"""Per-slice binary segmentation metrics, compatible with medpy 0.5.2, on any torch device.

Definitions (``medpy.metric.binary`` with the default voxel spacing of one pixel and
connectivity 1, which the reference evaluation uses):

- Dice ``2|P∩T| / (|P|+|T|)`` (``dc``), Jaccard ``|P∩T| / |P∪T|`` (``jc``).
- Surface of a mask: the mask minus its binary erosion by the 4-connected cross, with pixels
  outside the slice counted as background (so a mask touching the border has a surface there).
- ``hd95``: the 95th percentile (numpy's default linear interpolation) of the union of the
  distances from every prediction-surface pixel to the nearest target-surface pixel and from
  every target-surface pixel to the nearest prediction-surface pixel.
- ``asd``: the mean distance from the PREDICTION's surface to the TARGET's surface. medpy's
  ``asd(result, reference)`` is one-directional, and so is this one.

Empty-mask policy (medpy raises on empty masks; the reference code scored an empty prediction
as hd95 = asd = 100 and crashed on a false positive over an empty target):

- prediction and target both empty: Dice = Jaccard = 1 (the prediction is right); hd95 and asd
  are undefined, returned as NaN and left out of nan-means;
- exactly one of them empty (a missed structure or a false positive): Dice = Jaccard = 0 and
  hd95 = asd = ``penalty`` pixels (100 in the reference). A miss never scores a perfect 0.

The callers count both cases (``empty_pred``/``empty_target`` flags) and report the counts.

The surface distances (exact Euclidean, batched on the device) are in
:mod:`evaluation.distances`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from evaluation.distances import surface_metrics


def region_masks(labels: Tensor, regions: Sequence[Sequence[int]]) -> Tensor:
    """Binary region masks from class-index maps.

    Args:
        labels: (N, H, W) integer class indices (0 = background).
        regions: R regions, each a sequence of class indices whose union is the region
            (fundus: cup = (1,), whole disc = (1, 2)).

    Returns:
        (N, R, H, W) bool, on ``labels``' device.
    """
    if labels.dim() != 3 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"region_masks: labels must be an (N, H, W) integer tensor, got "
            f"{tuple(labels.shape)} {labels.dtype}"
        )
    if not regions or any(len(classes) == 0 for classes in regions):
        raise ValueError(f"region_masks: every region needs at least one class, got {regions}")
    masks = []
    for classes in regions:
        mask = labels == classes[0]
        for c in classes[1:]:
            mask |= labels == c
        masks.append(mask)
    return torch.stack(masks, dim=1)


def slice_metrics(pred: Tensor, target: Tensor, *, penalty: float = 100.0) -> dict[str, Tensor]:
    """Dice, Jaccard, HD95 and ASD of each slice of one region (see the module docstring).

    Args:
        pred, target: (N, H, W) bool masks on the same device (patch resolution).
        penalty: hd95/asd in pixels when exactly one of the two masks is empty.

    Returns:
        ``dice``, ``jaccard`` in [0, 1], ``hd95``, ``asd`` in pixels (NaN when both masks are
        empty): (N,) float64 (float32 on devices without float64, e.g. MPS);
        ``empty_pred``, ``empty_target``: (N,) bool.
    """
    _check_masks(pred, target, 3, "slice_metrics", "(N, H, W)")
    return _binary_metrics(pred, target, penalty)


def volume_metrics(pred: Tensor, target: Tensor, *, penalty: float = 100.0) -> dict[str, Tensor]:
    """The metrics of :func:`slice_metrics` for whole volumes, with 3-D surfaces and distances.

    As medpy's ``binary.*`` on a 3-D array with the default voxel spacing: the surface is the
    mask minus its erosion by the 6-connected cross (voxels outside the volume are background),
    and distances are Euclidean in voxel units (one unit per slice step, row and column).

    Args:
        pred, target: (N, D, H, W) bool volumes on the same device.
        penalty: hd95/asd in voxels when exactly one of the two volumes is empty.

    Returns:
        As :func:`slice_metrics`, one value per volume: (N,) tensors.
    """
    _check_masks(pred, target, 4, "volume_metrics", "(N, D, H, W)")
    return _binary_metrics(pred, target, penalty)


def _binary_metrics(pred: Tensor, target: Tensor, penalty: float) -> dict[str, Tensor]:
    """Metrics of (N, *spatial) bool masks with 2 or 3 spatial dimensions."""
    pred, target = _crop_to_foreground(pred, target)
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64
    inter, size_p, size_t = (_count(m).to(dtype) for m in (pred & target, pred, target))
    empty_pred, empty_target = size_p == 0, size_t == 0
    both_empty = empty_pred & empty_target
    one = torch.ones_like(inter)
    # Both empty: 0/0, defined as 1 like the reference's dice_calcu (medpy 0.5.2 returns NaN for
    # dc, 1 for jc); one empty gives 0 by the formulas.
    dice = torch.where(both_empty, one, 2 * inter / (size_p + size_t).clamp_min(1))
    jaccard = torch.where(both_empty, one, inter / (size_p + size_t - inter).clamp_min(1))
    valid = ~(empty_pred | empty_target)
    hd95, asd = surface_metrics(pred, target, valid, dtype)
    nan = torch.full_like(inter, float("nan"))
    fallback = torch.where(both_empty, nan, torch.full_like(inter, penalty))
    return {
        "dice": dice,
        "jaccard": jaccard,
        "hd95": torch.where(valid, hd95, fallback),
        "asd": torch.where(valid, asd, fallback),
        "empty_pred": empty_pred,
        "empty_target": empty_target,
    }


def _crop_to_foreground(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Crop every slice (volume) to the bounding box of all foreground pixels of the batch.

    Exact for every metric: overlaps and distances ignore the cut background, and surfaces do
    not change since pixels outside the crop are background either way (``border_value=0``).
    The dense passes then cover only the organ's neighbourhood. One host sync.
    """
    occupied = (pred | target).any(0)
    dims = tuple(range(occupied.dim()))
    # Per spatial dimension, which indices hold foreground; one read-back for all of them.
    flags = [occupied.any(dim=tuple(o for o in dims if o != d)) for d in dims]
    hits = torch.cat(flags).nonzero().flatten().tolist()
    box, offset = [slice(None)], 0
    for size in occupied.shape:
        inside = [i - offset for i in hits if offset <= i < offset + size]
        # No foreground at all: every slice is both-empty; keep one pixel.
        box.append(slice(inside[0], inside[-1] + 1) if inside else slice(0, 1))
        offset += size
    return pred[tuple(box)], target[tuple(box)]


def _count(mask: Tensor) -> Tensor:
    """(N, ...) bool -> (N,) int32 number of True pixels (a byte sum: faster than bool sum)."""
    return mask.flatten(1).view(torch.uint8).sum(1, dtype=torch.int32)


def _check_masks(pred: Tensor, target: Tensor, dims: int, caller: str, shape: str) -> None:
    for name, mask in (("pred", pred), ("target", target)):
        if mask.dtype != torch.bool or mask.dim() != dims:
            raise ValueError(
                f"{caller}: {name} must be an {shape} bool tensor, got "
                f"{tuple(mask.shape)} {mask.dtype}"
            )
    if pred.shape != target.shape or pred.device != target.device:
        raise ValueError(
            f"{caller}: pred {tuple(pred.shape)} on {pred.device} and target "
            f"{tuple(target.shape)} on {target.device} must match in shape and device"
        )
    # Squared distances are int32: (D + H + W)^2 plus a squared offset must stay below 2^31.
    if sum(pred.shape[1:]) > 30000:
        raise ValueError(f"{caller}: sizes {tuple(pred.shape[1:])} exceed the supported sum 30000")
