"""The reference U-Net: parameter counts, shapes, padding, channels_last, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from networks import build_unet
from networks.unet import UNet


@pytest.mark.parametrize(
    ("in_channels", "num_classes", "expected"),
    [(1, 1, 31_036_546), (3, 2, 31_037_763), (1, 3, 31_036_676)],
)
def test_parameter_counts_match_the_reference(in_channels, num_classes, expected) -> None:
    net = build_unet(in_channels, num_classes)
    assert sum(p.numel() for p in net.parameters()) == expected
    # BatchNorm buffers (running stats + counters): 11,794 elements, as in the reference's U-Net.
    assert sum(b.numel() for b in net.buffers()) == 11_794


def test_state_dict_names_follow_the_reference_layout() -> None:
    names = set(UNet(1, 1, base_width=4).state_dict())
    for name in (
        "inc.double_conv.0.weight",
        "down1.maxpool_conv.1.double_conv.4.running_var",
        "up4.up.weight",
        "up4.conv.double_conv.3.weight",
        "outc.conv.bias",
    ):
        assert name in names
    assert "inc.double_conv.0.bias" not in names  # 3x3 convolutions have no bias


@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 1), (3, 2), (1, 3)])
def test_output_shape(in_channels, num_classes) -> None:
    net = UNet(in_channels, num_classes, base_width=4)
    for batch in (1, 3):
        logits = net(torch.rand(batch, in_channels, 32, 48))
        assert logits.shape == (batch, num_classes + 1, 32, 48)
        assert logits.dtype == torch.float32


def test_pads_only_when_sizes_differ(monkeypatch) -> None:
    net = UNet(1, 2, base_width=4).eval()
    calls = []

    def counting_pad(x, pad, *args, **kwargs):
        calls.append(tuple(pad))
        return original(x, pad, *args, **kwargs)

    original = F.pad
    monkeypatch.setattr(F, "pad", counting_pad)
    net(torch.rand(1, 1, 32, 32))
    assert calls == []
    # 44 -> 22 -> 11 -> 5 -> 2: the upsampled 4 and 10 maps are one short of 5 and 11.
    logits = net(torch.rand(1, 1, 44, 44))
    assert logits.shape == (1, 3, 44, 44)
    assert calls == [(0, 1, 0, 1), (0, 1, 0, 1)]


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    net = UNet(1, 2, base_width=4).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        logits = net_cl(x.to(memory_format=torch.channels_last))
    assert logits.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient() -> None:
    net = UNet(3, 2, base_width=4)
    target = torch.randint(0, 3, (2, 32, 32))
    F.cross_entropy(net(torch.rand(2, 3, 32, 32)), target).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        UNet(1, 0)
