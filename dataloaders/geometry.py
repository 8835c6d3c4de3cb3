"""Geometric augmentation: affine matrices, the elastic field, one-pass resampling, resizing.

Coordinates follow ``F.affine_grid``/``F.grid_sample`` with ``align_corners=False`` everywhere:
x to the right, y down, the canvas spans [-1, 1] edge to edge, so a displacement of ``d`` pixels
is ``2 d / S`` normalized units and the canvas centre is 0.

:func:`affine_matrices` composes scale-crop, rotation and flip into one (B, 2, 3) matrix,
:func:`elastic_displacement` draws the reference's elastic field scaled to the canvas, and
:func:`warp` resamples images (bilinear) and masks (nearest) once through both.
:func:`resize_images` and :func:`resize_masks` bring canvases to a model's input size. The
random draws that feed them are :func:`dataloaders.transforms.weak_augment`'s. Nothing here
reads values back to the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dataloaders.augment_base import REFERENCE_CANVAS, gaussian_kernels, in_float32, separable_conv

# Elastic noise is drawn on a grid where the Gaussian's sigma spans this many cells.
_ELASTIC_CELLS_PER_SIGMA = 4.0
# scipy.ndimage.gaussian_filter's default kernel truncation, in sigmas.
_GAUSSIAN_TRUNCATE = 4.0


def affine_matrices(
    scale_x: Tensor,
    scale_y: Tensor,
    centre_x: Tensor,
    centre_y: Tensor,
    degrees: Tensor,
    flip: Tensor,
) -> Tensor:
    """Sampling matrices (output -> input, normalized coordinates) of scale-crop, rotate, flip.

    The reference applies scale-crop, then rotation about the centre, then the flip, so an output
    point u samples the input at ``Z R F u + c``: F mirrors x where ``flip``, R rotates by
    ``degrees`` counter-clockwise on screen (as PIL's ``rotate``), Z = diag(1/scale_x, 1/scale_y)
    zooms in and c = (centre_x, centre_y) is the crop window's centre.

    Args:
        scale_x, scale_y, centre_x, centre_y, degrees: (B,) float.
        flip: (B,) bool.

    Returns:
        theta (B, 2, 3) float32, as ``F.affine_grid`` takes it.
    """
    rad = torch.deg2rad(degrees.float())
    cos, sin = rad.cos(), rad.sin()
    mirror = 1.0 - 2.0 * flip.float()
    row_x = torch.stack([cos * mirror / scale_x, -sin / scale_x, centre_x.float()], dim=-1)
    row_y = torch.stack([sin * mirror / scale_y, cos / scale_y, centre_y.float()], dim=-1)
    return torch.stack([row_x, row_y], dim=1)


@in_float32
def warp(
    images: Tensor,
    masks: Tensor,
    theta: Tensor,
    displacement: Tensor | None = None,
    *,
    fill_class: int = 0,
) -> tuple[Tensor, Tensor]:
    """Resample images and masks once through ``theta`` and an optional displacement field.

    The displacement is applied first, in the output frame (the reference's elastic step comes
    last), so a pixel u samples the input at ``theta (u + d(u))`` = ``affine_grid + M d``.

    Args:
        images: (B, C, H, W) float in [0, 1].
        masks: (B, H, W) integer class indices.
        theta: (B, 2, 3) output -> input, normalized coordinates (``align_corners=False``).
        displacement: (B, H, W, 2) (x, y) in normalized units, or None.
        fill_class: mask value outside the input canvas (images get 0 there).

    Returns:
        images (B, C, H, W) float32 in [0, 1] (bilinear), masks (B, H, W) int64 (nearest).
    """
    b, c, h, w = images.shape
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    if displacement is not None:
        grid = grid + torch.einsum("bij,bhwj->bhwi", theta[:, :, :2], displacement)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # A ones channel sampled beside the mask marks what stays inside the canvas, whatever the
    # class values are.
    stacked = torch.stack([masks.float(), torch.ones_like(masks, dtype=torch.float32)], dim=1)
    sampled = F.grid_sample(
        stacked, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    out_masks = torch.where(sampled[:, 1] > 0.5, sampled[:, 0].round().long(), fill_class)
    return out.clamp_(0.0, 1.0), out_masks


def elastic_displacement(
    batch: int,
    size: int,
    generator: torch.Generator,
    *,
    alpha: float,
    sigma: float,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Elastic displacement field in pixels for a (size x size) canvas: the reference's field at
    512, scaled to the canvas.

    The reference filters U(-1, 1) noise with a Gaussian of sigma * 512 pixels (zero padding) and
    multiplies by alpha * 512. Filtered white noise has a std proportional to 1 / sigma, so that
    field is ~0.163 * alpha / sigma pixels (~4 px) whatever the canvas: on a 256 canvas the same
    formula would give twice the reference's displacement and strain relative to the image. So
    the field is computed in units of the canvas (sigma * size, alpha * size) and then scaled by
    size / 512: the displacement is the same fraction of the image side and the strain (its
    gradient, displacement / correlation length) is the same at every canvas size.

    The smoothing sigma is ~41 px at 512, so the field is very smooth: the noise is drawn on an
    n x n grid where sigma spans 4 cells (the same grid at every canvas larger than it, so a seed
    gives the same field relative to the image at 256 and 512), filtered there with the
    proportionally smaller sigma, scaled by n / size and upsampled bilinearly. When ``size`` is
    no larger than that grid, the field is computed directly at full resolution.
    ``tests/test_transforms.py`` checks its std against the direct computation and its relative
    statistics across canvases.

    Returns:
        (batch, size, size, 2) float32 (dx, dy) in pixels; std ~ 0.163 * alpha / sigma *
        size / 512 pixels away from the border (about 4 px at 512, 2 px at 256).
    """
    n = min(size, max(8, round(_ELASTIC_CELLS_PER_SIGMA / sigma)))
    sigma_cells = sigma * n
    radius = int(_GAUSSIAN_TRUNCATE * sigma_cells + 0.5)
    noise = torch.rand(batch, 2, n, n, generator=generator, device=device) * 2 - 1
    with torch.autocast(noise.device.type, enabled=False):
        kernel = gaussian_kernels(torch.full((batch,), sigma_cells, device=device), radius)
        field = separable_conv(noise, kernel, reflect=False) * (n / size)
        if n != size:
            field = F.interpolate(field, size=(size, size), mode="bilinear", align_corners=False)
    return (field * (alpha * size * size / REFERENCE_CANVAS)).permute(0, 2, 3, 1).contiguous()


@in_float32
def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear resize (B, C, H, W) float -> (B, C, size, size), antialiased when shrinking.

    Returns the input itself when it already has that size.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            f"resize_images: expected float (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    shrink = size < h or size < w
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )


def resize_masks(masks: Tensor, size: int) -> Tensor:
    """Nearest resize (B, H, W) -> (B, size, size), keeping the dtype and the class values.

    Pixel centres are aligned as in ``resize_images`` (``nearest-exact``: output i reads input
    ``floor((i + 0.5) * H / size)``), not corner-aligned as the reference's scipy ``zoom``, so
    masks stay registered with the bilinearly resized images.
    """
    if masks.dim() != 3:
        raise ValueError(f"resize_masks: expected (B, H, W), got {tuple(masks.shape)}")
    h, w = masks.shape[-2:]
    if (h, w) == (size, size):
        return masks
    return masks.index_select(1, _nearest_index(h, size, masks.device)).index_select(
        2, _nearest_index(w, size, masks.device)
    )


def _nearest_index(length: int, size: int, device: torch.device) -> Tensor:
    centres = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) * (length / size)
    return centres.floor().long().clamp_(max=length - 1)
