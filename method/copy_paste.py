"""Copy-paste of intermediate samples (paper Eq. 1): random boxes, their masks at each model's
resolution, and the paste itself. Vectorised over the batch, on the device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

# ----------------------------------------------------------------- copy-paste (Eq. 1)


# Candidates per box: at the largest area (40 %) about 6 % of them fit, so all 512 fail with
# probability < 1e-13.
_CANDIDATES = 512


class BoxDraws(NamedTuple):
    """The uniform draws behind one batch of copy-paste boxes. The caller draws them before the
    step (:func:`draw_boxes`), so that the step itself holds no random generator: it is then a
    function of its tensors alone, which ``torch.compile`` can capture in one graph."""

    area: Tensor  # (B,) float64 in [0, 1): each box's area within the area range
    candidates: Tensor  # (B, _CANDIDATES, 3) float64 in [0, 1): aspect ratio, x0, y0 per candidate


def draw_boxes(batch: int, generator: torch.Generator, device: torch.device) -> BoxDraws:
    """The random numbers of ``batch`` boxes, from ``generator`` (on ``device``)."""
    kwargs = {"generator": generator, "device": device, "dtype": torch.float64}
    return BoxDraws(torch.rand(batch, **kwargs), torch.rand((batch, _CANDIDATES, 3), **kwargs))


def boxes_from_draws(
    draws: BoxDraws, size: int, *, area: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """One box per sample on a size x size grid (the reference's ``obtain_cutmix_box``).

    As the reference: area ~ U(area) * size^2, drawn once per box; then ratio r ~ U(ratio),
    w = floor(sqrt(area / r)), h = floor(sqrt(area * r)) and a corner x, y ~ randint[0, size) are
    redrawn until the box fits. The reference redraws in a host loop; we take 512 candidates per
    box at once and keep the first that fits, which is the same distribution. Should none fit, the
    first candidate is clamped into the grid instead.

    Returns:
        (B, 4) int64 rows (y0, x0, h, w), with 0 <= y0, y0 + h <= size (same for x).
    """
    box_area = (area[0] + (area[1] - area[0]) * draws.area) * (size * size)
    u = draws.candidates
    aspect = ratio[0] + (ratio[1] - ratio[0]) * u[..., 0]
    w = (box_area[:, None] / aspect).sqrt().floor()
    h = (box_area[:, None] * aspect).sqrt().floor()
    # clamp() guards against u * size rounding up to size.
    x0 = (u[..., 1] * size).floor().clamp(max=size - 1)
    y0 = (u[..., 2] * size).floor().clamp(max=size - 1)
    fits = (x0 + w <= size) & (y0 + h <= size)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first fitting one, else 0
    y0, x0, h, w = (t.gather(1, first).squeeze(1) for t in (y0, x0, h, w))
    h, w = h.clamp(max=size), w.clamp(max=size)
    y0, x0 = torch.minimum(y0, size - h), torch.minimum(x0, size - w)
    return torch.stack([y0, x0, h, w], dim=1).long()


def sample_boxes(
    batch: int,
    size: int,
    *,
    area: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """:func:`draw_boxes` then :func:`boxes_from_draws`: (B, 4) int64 boxes (y0, x0, h, w)."""
    return boxes_from_draws(draw_boxes(batch, generator, device), size, area=area, ratio=ratio)


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
        boxes: (B, 4) int64 (y0, x0, h, w) from :func:`boxes_from_draws`.

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
