"""Copy-paste of intermediate samples (paper Eq. 1): random boxes, their masks at each model's
resolution, and the paste itself. Vectorised over the batch, on the device."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# ----------------------------------------------------------------- copy-paste (Eq. 1)


def sample_boxes(
    batch: int,
    size: int,
    *,
    area: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """One random box per sample on a size x size grid (the reference's ``obtain_cutmix_box``).

    Area ~ U(area) * size^2, aspect ratio r ~ U(ratio), w = floor(sqrt(area / r)),
    h = floor(sqrt(area * r)), each clamped to ``size``; the top-left corner is uniform over the
    positions where the box fits. Vectorised: the reference redraws r and the corner until the box
    fits (a host loop); we clamp and draw the corner inside the valid range instead.

    Returns:
        (B, 4) int64 rows (y0, x0, h, w), with 0 <= y0, y0 + h <= size (same for x).
    """
    u = torch.rand((batch, 4), generator=generator, device=device, dtype=torch.float64)
    box_area = (area[0] + (area[1] - area[0]) * u[:, 0]) * (size * size)
    aspect = ratio[0] + (ratio[1] - ratio[0]) * u[:, 1]
    w = (box_area / aspect).sqrt().floor().clamp(max=size)
    h = (box_area * aspect).sqrt().floor().clamp(max=size)
    # min() guards against u * n rounding up to n.
    x0 = torch.minimum((u[:, 2] * (size - w + 1)).floor(), size - w)
    y0 = torch.minimum((u[:, 3] * (size - h + 1)).floor(), size - h)
    return torch.stack([y0, x0, h, w], dim=1).long()


def _nearest_source(size: int, out_size: int, device: torch.device) -> Tensor:
    """Source index of each output pixel under torch's ``nearest`` resize, (out_size,) int64."""
    if out_size == size:
        return torch.arange(size, device=device)
    # The kernel computes floor(dst * scale) with a float32 scale = in / out; mirror it exactly.
    scale = float(np.float32(size) / np.float32(out_size))
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    return (dst * scale).floor().long().clamp(max=size - 1)


def box_mask(boxes: Tensor, size: int, out_size: int) -> Tensor:
    """Rasterise boxes of a size x size grid at out_size x out_size.

    Equal to nearest-resizing the size x size box map (how the reference derives its 512 and 128
    maps from the p map), without building it: an output pixel is inside when its nearest source
    pixel is.

    Args:
        boxes: (B, 4) int64 (y0, x0, h, w) from :func:`sample_boxes`.

    Returns:
        (B, out_size, out_size) bool.
    """
    src = _nearest_source(size, out_size, boxes.device)
    y0, x0, h, w = boxes.unbind(dim=1)
    rows = (src >= y0[:, None]) & (src < (y0 + h)[:, None])
    cols = (src >= x0[:, None]) & (src < (x0 + w)[:, None])
    return rows[:, :, None] & cols[:, None, :]


def paste(background: Tensor, patch: Tensor, mask: Tensor) -> Tensor:
    """``patch`` inside the mask, ``background`` outside: images (B, C, H, W) with mask
    (B, H, W) bool, or label/weight maps (B, H, W)."""
    if background.dim() == mask.dim() + 1:
        mask = mask.unsqueeze(1)
    return torch.where(mask, patch.to(background.dtype), background)
