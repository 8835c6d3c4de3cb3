"""The reference U-Net: four down and four up levels of double 3x3 convolutions.

This is the U-Net of the authors' code (itself milesial/Pytorch-UNet with ``bilinear=False``):
transposed-convolution upsampling, skip concatenation ``[skip, up]``, no dropout, a 1x1 head with
bias. Module names follow that code (``inc``, ``down1``..``down4``, ``up1``..``up4``, ``outc``),
so its state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """[Conv3x3 (no bias) -> BatchNorm -> ReLU] x 2: (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """MaxPool2d(2) then DoubleConv: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Upsample x2 by a transposed convolution, concatenate ``[skip, up]``, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          x (torch.Tensor): Bx(in)xhxw, the coarser feature map.
          skip (torch.Tensor): Bx(in/2)xHxW with H >= 2h, W >= 2w, the encoder feature map.

        Returns:
          torch.Tensor: Bx(out)xHxW.
        """
        x = self.up(x)
        dy = skip.shape[2] - x.shape[2]
        dx = skip.shape[3] - x.shape[3]
        # Only odd input sizes need padding; skipping the no-op pad keeps channels_last tensors
        # free of extra copies.
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class OutConv(nn.Sequential):
    """1x1 convolution with bias: (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)


class UNet(nn.Module):
    """U-Net with widths w, 2w, 4w, 8w, 16w (w = ``base_width``, 64 in the reference).

    With w = 64 it has 31,036,546 parameters for 1 input channel and 1 foreground class.

    Arguments:
      in_channels (int): image channels (1 grayscale, 3 RGB).
      num_classes (int): foreground classes C; the network outputs C + 1 channels (0 is
        background).
      base_width (int): channels of the first level.
    """

    def __init__(self, in_channels: int, num_classes: int, base_width: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_width < 1:
            raise ValueError(
                f"UNet: in_channels, num_classes and base_width must be >= 1, got "
                f"{in_channels}, {num_classes}, {base_width}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        w = base_width
        self.inc = DoubleConv(in_channels, w)
        self.down1 = Down(w, 2 * w)
        self.down2 = Down(2 * w, 4 * w)
        self.down3 = Down(4 * w, 8 * w)
        self.down4 = Down(8 * w, 16 * w)
        self.up1 = Up(16 * w, 8 * w)
        self.up2 = Up(8 * w, 4 * w)
        self.up3 = Up(4 * w, 2 * w)
        self.up4 = Up(2 * w, w)
        self.outc = OutConv(w, num_classes + 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          images (torch.Tensor): Bx(in_channels)xHxW float images (any range; the training code
            feeds [0, 1]). H and W need not be multiples of 16: odd sizes are padded inside.

        Returns:
          torch.Tensor: Bx(C+1)xHxW float logits, channel 0 = background.
        """
        x1 = self.inc(images)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.down4(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)
