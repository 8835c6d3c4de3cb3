"""What the geometric and photometric augmentation share.

The reference's canvas size (the unit of its pixel-valued parameters), the float32 guard that
every augmentation function runs under, and the Gaussian filtering that both the elastic field
(:mod:`dataloaders.geometry`) and the strong view's blur (:mod:`dataloaders.photometric`) use:
normalized 1-D kernels and a batched depthwise separable convolution with one kernel per sample.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

# The reference augments every image on a 512 x 512 canvas; pixel-valued parameters refer to it.
REFERENCE_CANVAS = 512

_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_float32(fn: Callable[Concatenate[Tensor, _P], _R]) -> Callable[Concatenate[Tensor, _P], _R]:
    """Run ``fn`` with autocast off on its first argument's device.

    Under bf16 autocast the sampling grid would lose sub-pixel precision (8-bit mantissa) and the
    outputs would not be float32; the augmentation is cheap, so it always runs in float32.
    """

    @functools.wraps(fn)
    def wrapper(images: Tensor, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.autocast(images.device.type, enabled=False):
            return fn(images, *args, **kwargs)

    return wrapper


def gaussian_kernels(sigmas: Tensor, radius: int) -> Tensor:
    """Normalized 1-D Gaussians on taps -radius..radius: (N,) sigmas -> (N, 2 radius + 1)."""
    taps = torch.arange(-radius, radius + 1, device=sigmas.device, dtype=torch.float32)
    kernel = torch.exp(-taps.square() / (2 * sigmas.float()[:, None].square()))
    return kernel / kernel.sum(dim=-1, keepdim=True)


def separable_conv(x: Tensor, kernels: Tensor, *, reflect: bool) -> Tensor:
    """Depthwise separable convolution of (B, C, H, W) with one (K,) kernel per sample.

    All samples and channels go through one grouped conv per axis (groups = B * C). ``kernels``
    is (B, K) with K odd; ``reflect`` pads by reflection (output H x W), otherwise with zeros.
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
