"""Batched weak and strong augmentation, as tensor operations on the batch's device.

The reference augments one sample at a time in PIL/scipy inside the data workers (its
``custom_transforms.py``). Here the same pipelines run on a whole batch wherever the batch lives
(the GPU during training), with every random number drawn from an explicit
``torch.Generator`` so that a seed reproduces them. The generator must be on the batch's device
(``torch.Generator(device=images.device)``); a mismatch raises ``ValueError``.

Weak view (labeled and unlabeled), each op independently per sample with its own probability:
scale-crop, rotation, horizontal flip, elastic deformation, in the reference's order. They are
composed into one sampling grid and the batch is resampled once (bilinear for images, nearest for
masks), instead of four successive resamplings, which keeps images sharper and is much faster.

Strong view (unlabeled): brightness, contrast and Gaussian blur on top of the weak view, so the
two views stay pixel-aligned.

Coordinates follow ``F.affine_grid``/``F.grid_sample`` with ``align_corners=False`` everywhere:
x to the right, y down, the canvas spans [-1, 1] edge to edge, so a displacement of ``d`` pixels
is ``2 d / S`` normalized units and the canvas centre is 0.

Deliberate differences from the reference (sub-pixel, distribution-preserving or better resampling):

- scale factors, crop offsets and rotation angles are continuous (the reference rounds sizes and
  offsets to pixels and draws integer degrees);
- the elastic field is drawn at reduced resolution and upsampled (see ``elastic_displacement``);
- the mask is filled with ``fill_class`` wherever the composed map leaves the canvas (the
  reference's elastic step replicates the mask's edge instead, a few pixels at most);
- no uint8 quantization between steps (the reference goes back to uint8 PIL after each op);
- ``resize_images`` brings images to a model's input size bilinearly, antialiased when shrinking;
  the reference takes every n-th pixel of its 512 canvas (scipy ``zoom``, order 0) for the U-Net
  input, which aliases fine texture at 512 -> 384 or 288. Training and test images go through the
  same function, so the two stay consistent;
- ``resize_masks`` aligns pixel centres like the bilinear ``resize_images`` (the reference's scipy
  ``zoom`` is corner-aligned, up to half a pixel off its own image resize).

Nothing here reads values back to the host, so the functions queue on the GPU without syncing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from dataloaders.specs import DatasetSpec

# ITU-R 601-2 luma weights, as PIL's ``convert("L")`` uses for the contrast mean.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Elastic noise is drawn on a grid where the Gaussian's sigma spans this many cells.
_ELASTIC_CELLS_PER_SIGMA = 4.0
# scipy.ndimage.gaussian_filter's default kernel truncation, in sigmas.
_GAUSSIAN_TRUNCATE = 4.0
# The reference augments every image on a 512 x 512 canvas; pixel-valued parameters refer to it.
REFERENCE_CANVAS = 512

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _float32(fn: Callable[Concatenate[Tensor, _P], _R]) -> Callable[Concatenate[Tensor, _P], _R]:
    """Run ``fn`` with autocast off on its first argument's device.

    Under bf16 autocast the sampling grid would lose sub-pixel precision (8-bit mantissa) and the
    outputs would not be float32; the augmentation is cheap, so it always runs in float32.
    """

    @functools.wraps(fn)
    def wrapper(images: Tensor, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.autocast(images.device.type, enabled=False):
            return fn(images, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges of the weak and strong augmentation (reference defaults).

    Elastic ``alpha`` and ``sigma`` are fractions of the image side as the reference sets them on
    its 512 canvas (alpha = 2 * 512, sigma = 0.08 * 512 pixels); the field is scaled so that any
    canvas S gets the reference's deformation relative to the image (see
    :func:`elastic_displacement`). ``blur_sigma`` is in pixels of the reference's 512 canvas and
    is scaled by S / 512, as the kernel (a fraction of S) is, so a smaller canvas gets the same
    blur relative to the image.
    """

    p_scale_crop: float = 0.5
    scale_range: tuple[float, float] = (1.0, 1.5)  # w and h factors drawn independently
    p_rotate: float = 0.5
    max_degrees: float = 20.0
    p_flip: float = 0.5
    p_elastic: float = 0.5
    elastic_alpha: float = 2.0
    elastic_sigma: float = 0.08
    intensity_range: tuple[float, float] = (0.1, 2.0)  # brightness and contrast factors
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels at S = 512
    blur_kernel_fraction: float = 0.1  # kernel = int(0.1 * 512) = 51 at 512

    def __post_init__(self) -> None:
        for name in ("p_scale_crop", "p_rotate", "p_flip", "p_elastic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentParams.{name}: expected a probability in [0, 1]")
        for name in ("scale_range", "intensity_range", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ValueError(f"AugmentParams.{name}: expected 0 < low <= high, got {lo, hi}")
        if self.elastic_sigma <= 0 or self.elastic_alpha < 0 or self.max_degrees < 0:
            raise ValueError(
                "AugmentParams: expected elastic_sigma > 0, elastic_alpha >= 0, max_degrees >= 0"
            )
        if not 0.0 <= self.blur_kernel_fraction <= 1.0:
            raise ValueError("AugmentParams.blur_kernel_fraction: expected a value in [0, 1]")

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> AugmentParams:
        """Reference defaults with the dataset's brightness/contrast range."""
        return cls(intensity_range=tuple(spec.intensity_range))


@_float32
def weak_augment(
    images: Tensor,
    masks: Tensor,
    generator: torch.Generator,
    params: AugmentParams,
    *,
    fill_class: int = 0,
) -> tuple[Tensor, Tensor]:
    """Weak view: scale-crop, rotation, horizontal flip and elastic deformation, per sample.

    Args:
        images: (B, C, S, S) uint8 in 0..255 or float in [0, 1].
        masks: (B, S, S) integer class indices.
        generator: on ``images.device``; the only source of randomness.
        params: probabilities and ranges.
        fill_class: mask class where the warp leaves the canvas (images get 0 there).

    Returns:
        images (B, C, S, S) float32 in [0, 1] and masks (B, S, S) int64 whose values are a subset
        of the input values and ``fill_class``. Image and mask of a sample share one geometry.

    Randomness: one (B, 9) uniform draw, then the elastic noise (not drawn when ``p_elastic`` or
    ``elastic_alpha`` is 0). A seed reproduces the output on one device type; CPU and CUDA
    generators give different streams.
    """
    images = _to_float(images)
    _check_pair(images, masks)
    _check_generator(generator, images.device)
    b, _, s, _ = images.shape
    u = torch.rand(b, 9, generator=generator, device=images.device)
    theta = _random_affine(u, params)
    displacement = None
    if params.p_elastic > 0 and params.elastic_alpha > 0:
        field = elastic_displacement(
            b,
            s,
            generator,
            alpha=params.elastic_alpha,
            sigma=params.elastic_sigma,
            device=images.device,
        )
        apply = (u[:, 8] < params.p_elastic).to(field.dtype).view(b, 1, 1, 1)
        displacement = field * (2.0 / s) * apply
    return warp(images, masks, theta, displacement, fill_class=fill_class)


def _random_affine(u: Tensor, params: AugmentParams) -> Tensor:
    """(B, 2, 3) sampling matrices from uniform draws ``u`` (B, >= 8); see ``affine_matrices``."""
    lo, hi = params.scale_range
    crop = u[:, 0] < params.p_scale_crop
    scale_x = torch.where(crop, lo + (hi - lo) * u[:, 1], 1.0)
    scale_y = torch.where(crop, lo + (hi - lo) * u[:, 2], 1.0)
    # A zoom by s shows 1/s of the canvas; a uniform offset keeps that window inside the image,
    # like the reference's uniform crop position.
    centre_x = (1 - 1 / scale_x) * (2 * u[:, 3] - 1)
    centre_y = (1 - 1 / scale_y) * (2 * u[:, 4] - 1)
    degrees = torch.where(u[:, 5] < params.p_rotate, params.max_degrees * (2 * u[:, 6] - 1), 0.0)
    flip = u[:, 7] < params.p_flip
    return affine_matrices(scale_x, scale_y, centre_x, centre_y, degrees, flip)


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


@_float32
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
        field = _separable_conv(noise, kernel, reflect=False) * (n / size)
        if n != size:
            field = F.interpolate(field, size=(size, size), mode="bilinear", align_corners=False)
    return (field * (alpha * size * size / REFERENCE_CANVAS)).permute(0, 2, 3, 1).contiguous()


@_float32
def strong_augment(images: Tensor, generator: torch.Generator, params: AugmentParams) -> Tensor:
    """Strong view: brightness, contrast, Gaussian blur, always, with per-sample factors.

    Photometric only, so it stays pixel-aligned with the weak view it is applied to. Brightness
    and contrast factors are drawn independently from ``params.intensity_range``, the blur sigma
    from ``params.blur_sigma`` times S / 512; the kernel is ``int(blur_kernel_fraction * S)`` made
    odd. At S = 512 both are the reference's.

    Args:
        images: (B, C, S, S) float in [0, 1] (uint8 is accepted), C = 1 or 3.
        generator: on ``images.device``.

    Returns:
        (B, C, S, S) float32 in [0, 1].
    """
    images = _to_float(images)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"strong_augment: expected images (B, 1|3, S, S), got {tuple(images.shape)}"
        )
    _check_generator(generator, images.device)
    u = torch.rand(images.shape[0], 3, generator=generator, device=images.device)
    lo, hi = params.intensity_range
    out = adjust_brightness(images, lo + (hi - lo) * u[:, 0])
    out = adjust_contrast(out, lo + (hi - lo) * u[:, 1])
    size = images.shape[-1]
    s_lo, s_hi = (sigma * size / REFERENCE_CANVAS for sigma in params.blur_sigma)
    kernel_size = blur_kernel_size(size, params.blur_kernel_fraction)
    return gaussian_blur(out, s_lo + (s_hi - s_lo) * u[:, 2], kernel_size).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factors: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Brightness``: ``images * factor``, clamped to [0, 1].

    images (B, C, H, W) float, factors (B,) -> (B, C, H, W).
    """
    return (images * factors.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factors: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with the mean grey level, clamped.

    ``mean + factor * (image - mean)`` with the per-sample mean of the luminance (ITU-R 601-2
    weights for RGB, the image itself for one channel). images (B, 1|3, H, W), factors (B,).
    """
    if images.shape[1] == 3:
        # Python-scalar weights: a weight tensor built from a list would be a blocking host copy.
        r, g, b = LUMA_WEIGHTS
        luma = images[:, 0] * r + images[:, 1] * g + images[:, 2] * b
    else:
        luma = images[:, 0]
    mean = luma.mean(dim=(-2, -1)).view(-1, 1, 1, 1)
    return (mean + factors.view(-1, 1, 1, 1) * (images - mean)).clamp_(0.0, 1.0)


def blur_kernel_size(size: int, fraction: float) -> int:
    """The reference's kernel size: k = ``int(fraction * size)`` made odd as 2 (k // 2) + 1."""
    return 2 * (int(fraction * size) // 2) + 1


@_float32
def gaussian_blur(images: Tensor, sigmas: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one sigma per sample and reflect padding, as the reference.

    Args:
        images: (B, C, H, W) float.
        sigmas: (B,) float > 0.
        kernel_size: odd, smaller than 2 H and 2 W (reflect padding).

    Returns:
        (B, C, H, W), same dtype.
    """
    kernel = gaussian_kernels(sigmas, kernel_size // 2)
    return _separable_conv(images, kernel.to(images.dtype), reflect=True)


def gaussian_kernels(sigmas: Tensor, radius: int) -> Tensor:
    """Normalized 1-D Gaussians on taps -radius..radius: (N,) sigmas -> (N, 2 radius + 1)."""
    taps = torch.arange(-radius, radius + 1, device=sigmas.device, dtype=torch.float32)
    kernel = torch.exp(-taps.square() / (2 * sigmas.float()[:, None].square()))
    return kernel / kernel.sum(dim=-1, keepdim=True)


def _separable_conv(x: Tensor, kernels: Tensor, *, reflect: bool) -> Tensor:
    """Depthwise separable convolution of (B, C, H, W) with one (K,) kernel per sample.

    All samples and channels go through one grouped conv per axis (groups = B * C).
    """
    b, c, h, w = x.shape
    radius = kernels.shape[-1] // 2
    weight = kernels.repeat_interleave(c, dim=0)
    x = x.reshape(1, b * c, h, w)
    pad = 0
    if reflect:
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    else:
        pad = radius
    x = F.conv2d(x, weight.view(b * c, 1, -1, 1), padding=(pad, 0), groups=b * c)
    x = F.conv2d(x, weight.view(b * c, 1, 1, -1), padding=(0, pad), groups=b * c)
    return x.view(b, c, h, w)


@_float32
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


def _to_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"expected uint8 or float images, got {images.dtype}")


def _check_pair(images: Tensor, masks: Tensor) -> None:
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"weak_augment: expected images (B, C, S, S), got {tuple(images.shape)}")
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(
            f"weak_augment: expected masks {(images.shape[0], *images.shape[-2:])} "
            f"matching the images, got {tuple(masks.shape)}"
        )
    if masks.is_floating_point() or masks.is_complex():
        raise TypeError(f"weak_augment: expected integer class-index masks, got {masks.dtype}")
    if masks.device != images.device:
        raise ValueError(f"weak_augment: masks on {masks.device}, images on {images.device}")


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    g = generator.device
    if g.type != device.type or (g.index is not None and device.index not in (None, g.index)):
        raise ValueError(
            f"augmentation generator is on {g} but the batch is on {device}; "
            f"create it with torch.Generator(device=images.device)"
        )
