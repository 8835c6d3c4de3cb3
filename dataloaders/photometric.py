"""Photometric augmentation: brightness, contrast and Gaussian blur, per sample on a batch.

The strong view's operations (:func:`dataloaders.transforms.strong_augment` draws their factors),
written to match PIL's ``ImageEnhance`` and the reference's blur. They change intensities only,
so a view stays pixel-aligned with the geometry it was given. Nothing here reads values back to
the host.
"""

from __future__ import annotations

from torch import Tensor

from dataloaders.augment_base import gaussian_kernels, in_float32, separable_conv

# ITU-R 601-2 luma weights, as PIL's ``convert("L")`` uses for the contrast mean.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


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


@in_float32
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
    return separable_conv(images, kernel.to(images.dtype), reflect=True)
