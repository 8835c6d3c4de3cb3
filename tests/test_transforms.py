"""Batched weak/strong augmentation: geometry, photometry, reproducibility, resizing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from scipy import ndimage

from dataloaders.geometry import (
    affine_matrices,
    elastic_displacement,
    resize_images,
    resize_masks,
    warp,
)
from dataloaders.photometric import (
    adjust_brightness,
    adjust_contrast,
    blur_kernel_size,
    gaussian_blur,
)
from dataloaders.specs import FUNDUS, PROSTATE
from dataloaders.transforms import AugmentParams, strong_augment, weak_augment

NO_OPS = dict(p_scale_crop=0.0, p_rotate=0.0, p_flip=0.0, p_elastic=0.0)


def only(**kwargs) -> AugmentParams:
    """Params with every weak op off except those given."""
    return AugmentParams(**{**NO_OPS, **kwargs})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def block_masks(batch: int, size: int, classes: int = 4, block: int = 8, seed: int = 0):
    """(B, S, S) int64 masks made of random class blocks, so they have large interiors."""
    coarse = torch.randint(0, classes, (batch, size // block, size // block), generator=gen(seed))
    return coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)


def norm_coords(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x, y), each (S, S), normalized with align_corners=False."""
    c = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1
    return c.view(1, -1).expand(size, size), c.view(-1, 1).expand(size, size)


# --------------------------------------------------------------------------- params


def test_params_from_spec_and_validation():
    assert AugmentParams.from_spec(FUNDUS).intensity_range == (0.5, 1.5)
    assert AugmentParams.from_spec(PROSTATE).intensity_range == (0.1, 2.0)
    with pytest.raises(ValueError, match="p_flip"):
        AugmentParams(p_flip=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentParams(scale_range=(1.5, 1.0))


def test_bad_inputs_raise():
    images = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match="masks"):
        weak_augment(images, torch.zeros(2, 8, 8, dtype=torch.long), gen(), AugmentParams())
    with pytest.raises(TypeError, match="integer"):
        weak_augment(images, torch.zeros(2, 16, 16), gen(), AugmentParams())
    with pytest.raises(ValueError, match=r"\(B, C, S, S\)"):
        weak_augment(
            torch.zeros(2, 1, 16, 12),
            torch.zeros(2, 16, 12, dtype=torch.long),
            gen(),
            AugmentParams(),
        )
    with pytest.raises(ValueError, match="1\\|3"):
        strong_augment(torch.zeros(2, 2, 16, 16), gen(), AugmentParams())


# --------------------------------------------------------------------------- weak: contract


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_weak_output_contract(batch, dtype):
    size = 32
    images = torch.randint(0, 256, (batch, 3, size, size), generator=gen(1), dtype=torch.uint8)
    if dtype == torch.float32:
        images = images.float() / 255
    masks = block_masks(batch, size, classes=3).to(torch.uint8) * 2  # values {0, 2, 4}
    params = AugmentParams(p_scale_crop=1, p_rotate=1, p_flip=1, p_elastic=1, max_degrees=45)
    out, out_masks = weak_augment(images, masks, gen(), params, fill_class=9)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out_masks.shape == masks.shape and out_masks.dtype == torch.int64
    assert out.min() >= 0 and out.max() <= 1
    assert set(out_masks.unique().tolist()) <= {0, 2, 4, 9}


def test_weak_image_and_mask_share_geometry():
    # The image encodes the mask (class k -> grey k * 60), so any geometric mismatch between the
    # bilinear image warp and the nearest mask warp shows up as a decoding error.
    size, k = 64, 60
    masks = block_masks(4, size)
    images = (masks * k).to(torch.uint8).unsqueeze(1)
    params = AugmentParams(p_scale_crop=1, p_rotate=1, p_flip=1, p_elastic=1)
    out, out_masks = weak_augment(images, masks, gen(3), params)
    decoded = torch.round(out[:, 0] * 255 / k).long()
    # Interior pixels: the output mask is constant over the 3x3 neighbourhood.
    padded = F.pad(out_masks.float().unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    interior = (F.max_pool2d(padded, 3, 1) == -F.max_pool2d(-padded, 3, 1)).squeeze(1)
    assert interior.float().mean() > 0.5
    agreement = (decoded == out_masks)[interior].float().mean()
    assert agreement >= 0.99
    assert not torch.equal(out_masks, masks)  # the geometry did change


def test_weak_image_and_mask_agree_at_object_borders():
    # With two classes and image = 255 * mask, rounding the bilinear image picks the same side of
    # an edge as nearest sampling, so even border pixels agree; a 0.4 px offset between the two
    # warps would break ~4 % of pixels.
    size = 64
    masks = block_masks(8, size, classes=2)
    images = (masks * 255).to(torch.uint8).unsqueeze(1)
    params = AugmentParams(p_scale_crop=1, p_rotate=1, p_flip=1, p_elastic=1)
    out, out_masks = weak_augment(images, masks, gen(1), params)
    assert (torch.round(out[:, 0]).long() == out_masks).float().mean() >= 0.99


def test_weak_fill_class_outside_canvas():
    size = 48
    masks = block_masks(4, size, classes=3)
    images = torch.full((4, 1, size, size), 0.8)
    # Seed 4 draws angles of at least 26 degrees, so every sample has filled corners.
    out, out_masks = weak_augment(
        images, masks, gen(4), only(p_rotate=1, max_degrees=45), fill_class=7
    )
    filled = out_masks == 7
    assert filled.any(dim=(1, 2)).all()
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, 7}
    # Away from the canvas edge the image is black where the mask is filled.
    assert (out[:, 0][filled] < 0.8).all()
    assert (out[:, 0][filled] < 1e-6).float().mean() > 0.8


def test_seed_reproduces_and_differs():
    size = 32
    images = torch.rand(4, 1, size, size, generator=gen(9))
    masks = block_masks(4, size)
    params = AugmentParams()

    def run(seed):
        g = gen(seed)
        weak, weak_masks = weak_augment(images, masks, g, params)
        return weak, weak_masks, strong_augment(weak, g, params)

    a, b, c = run(0), run(0), run(1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[2], c[2])


# --------------------------------------------------------------------------- weak: each op


def test_all_ops_off_and_unit_scale_are_identity():
    images = torch.rand(2, 3, 32, 32, generator=gen())
    masks = block_masks(2, 32)
    for params in (only(), only(p_scale_crop=1, scale_range=(1.0, 1.0))):
        out, out_masks = weak_augment(images, masks, gen(), params)
        torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
        assert torch.equal(out_masks, masks)


def test_flip_is_exact_mirror():
    images = torch.rand(3, 1, 32, 32, generator=gen())
    masks = block_masks(3, 32)
    out, out_masks = weak_augment(images, masks, gen(), only(p_flip=1))
    torch.testing.assert_close(out, images.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(out_masks, masks.flip(-1))


def test_rotation_by_known_angle_moves_known_point():
    size = 33
    image = torch.zeros(1, 1, size, size)
    image[0, 0, 16, 26] = 1.0  # 10 px right of the centre pixel (16, 16)
    masks = (image[:, 0] > 0).long()

    def rotated(degrees):
        one, zero = torch.ones(1), torch.zeros(1)
        theta = affine_matrices(
            one, one, zero, zero, torch.tensor([degrees]), torch.tensor([False])
        )
        return warp(image, masks, theta)

    out, out_masks = rotated(90.0)  # counter-clockwise on screen, as PIL: right -> top
    assert out[0, 0, 6, 16] > 0.99 and out_masks[0, 6, 16] == 1
    assert out_masks.sum() == 1
    out, out_masks = rotated(30.0)
    ys, xs = torch.nonzero(out_masks[0], as_tuple=True)
    expected = (16 - 10 * math.sin(math.radians(30)), 16 + 10 * math.cos(math.radians(30)))
    assert abs(ys.item() - expected[0]) <= 0.5 and abs(xs.item() - expected[1]) <= 0.5


def test_random_rotation_is_rigid_and_bounded():
    # A linear ramp I = 0.5 + 0.4 x is rotated exactly by bilinear sampling; the fitted
    # gradient (cos t, -sin t) gives each sample's angle.
    size, batch = 64, 16
    x, y = norm_coords(size)
    images = (0.5 + 0.4 * x).expand(batch, 1, size, size)
    out, _ = weak_augment(
        images,
        torch.zeros(batch, size, size, dtype=torch.long),
        gen(2),
        only(p_rotate=1, max_degrees=20),
    )
    inside = (x.square() + y.square()) < 0.6**2
    design = torch.stack([x[inside], y[inside]], dim=1)
    coef = torch.linalg.lstsq(design, ((out[:, 0] - 0.5) / 0.4)[:, inside].T).solution
    cos, sin = coef[0], -coef[1]
    torch.testing.assert_close(cos.square() + sin.square(), torch.ones(batch), atol=1e-3, rtol=0)
    angles = torch.rad2deg(torch.atan2(sin, cos))
    assert angles.abs().max() <= 20.01 and angles.std() > 5


def test_scale_crop_zooms_inside_the_image():
    # Ramps in x and y: after a zoom by s with window centre c, each ramp reads x / s + c.
    size, batch = 64, 16
    x, y = norm_coords(size)
    images = torch.stack([0.5 + 0.4 * x, 0.5 + 0.4 * y]).expand(batch, 2, size, size)
    out, _ = weak_augment(
        images, torch.zeros(batch, size, size, dtype=torch.long), gen(4), only(p_scale_crop=1)
    )
    for channel, coord in ((0, x), (1, y)):
        ramp = (out[:, channel] - 0.5) / 0.4
        slope = (
            (ramp[:, :, -1] - ramp[:, :, 0]).mean(1)
            if channel == 0
            else ((ramp[:, -1, :] - ramp[:, 0, :]).mean(1))
        )
        slope = slope / (coord.max() - coord.min())
        centre = ramp.mean(dim=(1, 2))
        scale = 1 / slope
        assert (scale >= 1 - 1e-4).all() and (scale <= 1.5 + 1e-4).all()
        assert scale.std() > 0.05  # drawn per sample
        assert (centre.abs() <= 1 - 1 / scale + 1e-4).all()  # the window stays inside
    assert out.min() > 0.05  # never sampled outside the canvas


def test_elastic_matches_direct_gaussian_filter_statistics():
    # Reference at 512: scipy gaussian_filter of U(-1, 1) noise, sigma 0.08 * 512, times 2 * 512.
    # The same relative field on an S canvas is that formula with S for 512, scaled by S / 512
    # (S = 128 is cheap enough to compute directly).
    size, batch = 128, 32
    rng = np.random.RandomState(0)
    direct = np.stack(
        [
            ndimage.gaussian_filter(rng.uniform(-1, 1, (size, size)), 0.08 * size, mode="constant")
            * 2
            * size
            * (size / 512)
            for _ in range(batch)
        ]
    )
    field = elastic_displacement(batch, size, gen(), alpha=2.0, sigma=0.08)
    assert field.shape == (batch, size, size, 2)
    assert abs(field.std().item() / direct.std() - 1) < 0.2
    smooth_ours = (field[:, 1:] - field[:, :-1]).std().item()
    smooth_direct = np.diff(direct, axis=1).std()
    assert abs(smooth_ours / smooth_direct - 1) < 0.2
    # Continuum formula for the interior: std = alpha / sigma / sqrt(12 pi) pixels at 512.
    interior = field[:, 32:-32, 32:-32].std().item() * 512 / size
    assert abs(interior / (2.0 / 0.08 / math.sqrt(12 * math.pi)) - 1) < 0.2


def _relative_field_stats(size: int, seed: int) -> tuple[float, float]:
    """(std of the displacement / canvas side, std of its gradient = strain), interior only."""
    field = elastic_displacement(16, size, gen(seed), alpha=2.0, sigma=0.08)
    inner = field[:, size // 4 : -size // 4, size // 4 : -size // 4]
    strain = inner[:, 1:] - inner[:, :-1]  # pixels of displacement per pixel
    return (inner / size).std().item(), strain.std().item()


def test_elastic_is_the_same_relative_deformation_at_256_and_512():
    # The reference deforms its 512 canvas; a 256 canvas must get the same deformation relative
    # to the image (displacement as a fraction of the side, and strain), not the same pixels.
    (disp_256, strain_256), (disp_512, strain_512) = (
        _relative_field_stats(s, seed=3) for s in (256, 512)
    )
    assert disp_256 == pytest.approx(disp_512, rel=0.02)
    assert strain_256 == pytest.approx(strain_512, rel=0.05)
    # At 512 it is the reference's field: ~4 px std (alpha / sigma / sqrt(12 pi)).
    assert disp_512 * 512 == pytest.approx(2.0 / 0.08 / math.sqrt(12 * math.pi), rel=0.25)
    # In pixels the 256 field is half the 512 one (the unscaled formula, alpha * S pixels, gave
    # ~4 px at every size: twice the reference's relative deformation at 256).
    assert disp_256 * 256 == pytest.approx(disp_512 * 512 / 2, rel=0.02)


def test_elastic_only_deforms_smoothly():
    size = 64
    x, _ = norm_coords(size)
    images = (0.5 + 0.4 * x).expand(4, 1, size, size)
    out, _ = weak_augment(
        images, torch.zeros(4, size, size, dtype=torch.long), gen(6), only(p_elastic=1)
    )
    shift_px = ((out[:, 0] - images[:, 0]) / 0.4 * size / 2)[:, 16:-16, 16:-16]
    # A few pixels on the reference's 512 canvas, the same fraction of this 64-px one.
    assert 1.0 < shift_px.std() * 512 / size < 8.0


def test_autocast_does_not_change_the_result():
    # bf16 autocast would round the sampling grid to ~1/256 of the canvas; the transforms opt out.
    images = torch.rand(2, 1, 64, 64, generator=gen())
    masks = block_masks(2, 64)
    params = AugmentParams()

    def run():
        g = gen(1)
        weak, weak_masks = weak_augment(images, masks, g, params)
        return weak, weak_masks, resize_images(strong_augment(weak, g, params), 32)

    plain = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run()
    for x, y in zip(plain, mixed):
        assert x.dtype == y.dtype and torch.equal(x, y)


# --------------------------------------------------------------------------- strong


def test_brightness_multiplies():
    images = torch.rand(2, 1, 8, 8, generator=gen())
    out = adjust_brightness(images, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(out[0], images[0] * 0.5)
    torch.testing.assert_close(out[1], (images[1] * 1.5).clamp(0, 1))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_contrast_matches_pil(mode):
    rng = np.random.RandomState(0)
    channels = 3 if mode == "RGB" else 1
    arrays = [rng.randint(0, 256, (12, 12, channels), dtype=np.uint8) for _ in range(2)]
    factors = [0.3, 1.7]
    expected = []
    for array, factor in zip(arrays, factors):
        pil = Image.fromarray(array[..., 0] if mode == "L" else array, mode)
        expected.append(np.asarray(ImageEnhance.Contrast(pil).enhance(factor), dtype=np.float32))
    expected = torch.from_numpy(np.stack(expected)).reshape(2, 12, 12, channels)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    out = adjust_contrast(images, torch.tensor(factors)) * 255
    assert (out.permute(0, 2, 3, 1) - expected).abs().max() <= 2.0


def test_blur_of_constant_is_constant():
    images = torch.full((3, 3, 20, 20), 0.37)
    out = gaussian_blur(images, torch.tensor([0.1, 1.0, 2.0]), 7)
    torch.testing.assert_close(out, images)


def test_blur_matches_reference_1d_convolution():
    images = torch.rand(2, 1, 16, 16, generator=gen(), dtype=torch.float64)
    sigmas, kernel_size = [0.7, 1.9], 9
    out = gaussian_blur(images, torch.tensor(sigmas), kernel_size).numpy()
    r = kernel_size // 2
    for b, sigma in enumerate(sigmas):
        taps = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
        taps /= taps.sum()
        ref = np.pad(images[b, 0].numpy(), r, mode="reflect")
        for axis in (0, 1):
            ref = np.apply_along_axis(np.convolve, axis, ref, taps, "valid")
        np.testing.assert_allclose(out[b, 0], ref, atol=1e-5)
    assert blur_kernel_size(512, 0.1) == 51 and blur_kernel_size(32, 0.1) == 3


def test_strong_blur_scales_with_the_canvas():
    # Brightness and contrast factors of 1 leave only the blur. The reference blurs its 512
    # canvas with sigma pixels; on a 64-px canvas the same relative blur is sigma * 64 / 512.
    size, sigma = 64, 2.0
    images = torch.rand(2, 1, size, size, generator=gen())
    params = AugmentParams(intensity_range=(1.0, 1.0), blur_sigma=(sigma, sigma))
    strong = strong_augment(images, gen(1), params)
    kernel_size = blur_kernel_size(size, 0.1)
    scaled = gaussian_blur(images, torch.full((2,), sigma * size / 512), kernel_size)
    unscaled = gaussian_blur(images, torch.full((2,), sigma), kernel_size)
    torch.testing.assert_close(strong, scaled.clamp(0, 1))
    assert (strong - unscaled).abs().max() > 0.05


def test_strong_without_blur_is_affine_in_the_weak_view():
    # Weak values <= 0.45 keep brightness (factor <= 2) from clipping, so without blur the strong
    # view is one affine map of the weak view per sample (up to contrast clipping, excluded).
    size = 32
    images = 0.45 * torch.rand(4, 3, size, size, generator=gen())
    weak, _ = weak_augment(images, block_masks(4, size), gen(1), AugmentParams())
    params = AugmentParams(blur_sigma=(1e-3, 1e-3))
    strong = strong_augment(weak, gen(2), params)
    assert strong.shape == weak.shape and strong.dtype == torch.float32
    assert strong.min() >= 0 and strong.max() <= 1
    for b in range(4):
        w, s = weak[b].flatten(), strong[b].flatten()
        free = (s > 1e-4) & (s < 1 - 1e-4)
        assert free.sum() > 100
        design = torch.stack([w[free], torch.ones_like(w[free])], dim=1)
        fit = torch.linalg.lstsq(design, s[free, None]).solution
        assert (design @ fit - s[free, None]).abs().max() < 1e-4


def test_strong_keeps_edges_in_place():
    images = torch.full((4, 1, 48, 48), 0.3)
    images[..., 20:] = 0.5  # vertical step between columns 19 and 20
    strong = strong_augment(images, gen(), AugmentParams(intensity_range=(0.5, 1.5)))
    edge = (strong[..., 1:] - strong[..., :-1]).abs().argmax(dim=-1)
    assert (edge == 19).all()


def test_strong_factors_come_from_the_range():
    images = torch.full((8, 1, 16, 16), 0.25)
    out = strong_augment(images, gen(), AugmentParams(intensity_range=(0.5, 1.5)))
    per_sample = out[:, 0, 0, 0]
    torch.testing.assert_close(out, per_sample.view(-1, 1, 1, 1).expand_as(out))
    assert (per_sample >= 0.125 - 1e-6).all() and (per_sample <= 0.375 + 1e-6).all()
    assert per_sample.std() > 0.02


# --------------------------------------------------------------------------- resize


def test_resize_images():
    images = torch.rand(2, 3, 64, 64, generator=gen())
    assert resize_images(images, 64) is images
    small = resize_images(images, 24)
    assert small.shape == (2, 3, 24, 24) and small.dtype == torch.float32
    torch.testing.assert_close(
        resize_images(torch.full((1, 1, 64, 64), 0.4), 24), torch.full((1, 1, 24, 24), 0.4)
    )
    assert resize_images(images, 96).shape == (2, 3, 96, 96)
    with pytest.raises(ValueError, match="float"):
        resize_images(images.to(torch.uint8), 32)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_resize_masks(dtype):
    masks = block_masks(2, 64).to(dtype)
    assert resize_masks(masks, 64) is masks
    for size in (24, 48, 96):
        out = resize_masks(masks, size)
        assert out.shape == (2, size, size) and out.dtype == dtype
        assert set(out.unique().tolist()) <= set(masks.unique().tolist())
        ref = F.interpolate(masks.unsqueeze(1).float(), size=(size, size), mode="nearest-exact")
        assert torch.equal(out, ref.squeeze(1).to(dtype))


# --------------------------------------------------------------------------- device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_weak_and_strong_on_cuda():
    device = torch.device("cuda")
    size = 128
    images = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, device=device)
    masks = block_masks(4, size).to(device)
    params = AugmentParams()
    outs = []
    for _ in range(2):
        g = torch.Generator(device=device).manual_seed(0)
        weak, weak_masks = weak_augment(images, masks, g, params, fill_class=5)
        outs.append((weak, weak_masks, strong_augment(weak, g, params)))
    for x, y in zip(*outs):
        assert x.device.type == "cuda"
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)  # same seed, same result
    weak, weak_masks, strong = outs[0]
    assert weak.dtype == strong.dtype == torch.float32 and weak_masks.dtype == torch.int64
    assert set(weak_masks.unique().tolist()) <= {0, 1, 2, 3, 5}
    assert strong.min() >= 0 and strong.max() <= 1
    with pytest.raises(ValueError, match="generator"):
        weak_augment(images, masks, torch.Generator(), params)
