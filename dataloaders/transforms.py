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

This module draws the random parameters of both views and composes them; the operations live in
:mod:`dataloaders.geometry` (affine matrices, elastic field, resampling, resizing) and
:mod:`dataloaders.photometric` (brightness, contrast, blur).

Deliberate differences from the reference (sub-pixel, distribution-preserving or better resampling):

- scale factors, crop offsets and rotation angles are continuous (the reference rounds sizes and
  offsets to pixels and draws integer degrees);
- the elastic field is drawn at reduced resolution and upsampled (see
  ``geometry.elastic_displacement``);
- the mask is filled with ``fill_class`` wherever the composed map leaves the canvas (the
  reference's elastic step replicates the mask's edge instead, a few pixels at most);
- no uint8 quantization between steps (the reference goes back to uint8 PIL after each op);
- ``geometry.resize_images`` brings images to a model's input size bilinearly, antialiased when
  shrinking; the reference takes every n-th pixel of its 512 canvas (scipy ``zoom``, order 0) for
  the U-Net input, which aliases fine texture at 512 -> 384 or 288. Training and test images go
  through the same function, so the two stay consistent;
- ``geometry.resize_masks`` aligns pixel centres like the bilinear ``resize_images`` (the
  reference's scipy ``zoom`` is corner-aligned, up to half a pixel off its own image resize).

Nothing here reads values back to the host, so the functions queue on the GPU without syncing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dataloaders.augment_base import REFERENCE_CANVAS, in_float32
from dataloaders.geometry import affine_matrices, elastic_displacement, warp
from dataloaders.photometric import (
    adjust_brightness,
    adjust_contrast,
    blur_kernel_size,
    gaussian_blur,
)
from dataloaders.specs import DatasetSpec


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges of the weak and strong augmentation (reference defaults).

    Elastic ``alpha`` and ``sigma`` are fractions of the image side as the reference sets them on
    its 512 canvas (alpha = 2 * 512, sigma = 0.08 * 512 pixels); the field is scaled so that any
    canvas S gets the reference's deformation relative to the image (see
    :func:`~dataloaders.geometry.elastic_displacement`). ``blur_sigma`` is in pixels of the
    reference's 512 canvas and is scaled by S / 512, as the kernel (a fraction of S) is, so a
    smaller canvas gets the same blur relative to the image.
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


@in_float32
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


@in_float32
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
