"""SynFoC method functions and the step (method/smc.py, method/copy_paste.py, method/step.py),
with tiny stand-in models on the CPU."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.ema import make_teacher
from method.batches import LabeledBatch, Models, UnlabeledBatch, Views
from method.config import MethodConfig, expected_scalar_keys, validate_method
from method.copy_paste import box_mask, boxes_from_draws, draw_boxes, paste, sample_boxes
from method.smc import (
    ensemble_alpha,
    ensemble_probs,
    mutual_confidence,
    pseudo_label,
    region_dice,
    resize_probs,
    self_confidence,
)
from method.step import _mix, _Target, _Teaching, draw_step_boxes, synfoc_step

K = 3  # background + 2 classes


@pytest.fixture(autouse=True)
def _one_thread():
    # The stand-in tensors are tiny: intra-op threads only add contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REGIONS = [(1,), (1, 2)]  # fundus-like overlapping cup / disc


# ------------------------------------------------------------------------------------- SMC Dice


def _map(*pixels: tuple[int, int, int], size: int = 4) -> torch.Tensor:
    """(size, size) int64 label map with the given (row, col, class) pixels."""
    out = torch.zeros(size, size, dtype=torch.long)
    for r, c, k in pixels:
        out[r, c] = k
    return out


def test_dice_identical_disjoint_empty_per_sample() -> None:
    same = _map((0, 0, 1), (1, 1, 1))
    a_disjoint = _map((0, 0, 1), (0, 1, 1))
    b_disjoint = _map((3, 3, 1), (3, 2, 1), (2, 3, 1))
    empty = _map()
    a = torch.stack([same, a_disjoint, empty])
    b = torch.stack([same, b_disjoint, empty])
    dice = region_dice(a, b, [(1,)])
    # identical: (2*2 + 1) / (4 + 1.001); disjoint: 1 / (2 + 3 + 1.001); both empty: 1.
    expected = torch.tensor([5 / 5.001, 1 / 6.001, 1.0])
    torch.testing.assert_close(dice, expected)


def test_dice_one_side_empty() -> None:
    a = _map((0, 0, 1), (0, 1, 1), (0, 2, 1)).unsqueeze(0)
    dice = region_dice(a, _map().unsqueeze(0), [(1,)])
    assert dice.item() == pytest.approx(1 / 4.001)


def test_dice_overlapping_regions_by_hand() -> None:
    # a: cup (0,0) (0,1), rim (1,0) (1,1); b: cup (0,0), rim (0,1) (1,0) (2,0).
    a = _map((0, 0, 1), (0, 1, 1), (1, 0, 2), (1, 1, 2)).unsqueeze(0)
    b = _map((0, 0, 1), (0, 1, 2), (1, 0, 2), (2, 0, 2)).unsqueeze(0)
    # cup: |A| 2, |B| 1, inter 1 -> 3 / 4.001; disc (1 or 2): |A| 4, |B| 4, inter 3 -> 7 / 9.001.
    expected = (3 / 4.001 + 7 / 9.001) / 2
    assert region_dice(a, b, REGIONS).item() == pytest.approx(expected, rel=1e-6)
    assert self_confidence(a, b, REGIONS).item() == pytest.approx(expected, rel=1e-6)


def test_mutual_confidence_nearest_downsample() -> None:
    # Teacher U-Net 4x4: class 1 on the top-left 2x2 block and at (2, 2). Nearest 4 -> 2 keeps
    # source pixels (0,0) (0,2) (2,0) (2,2): [[1, 0], [0, 1]].
    unet = _map((0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1), (2, 2, 1)).unsqueeze(0)
    foundation = torch.tensor([[[1, 1], [0, 0]]])
    # |A| 2, |B| 2, inter 1 -> 3 / 5.001 (a majority/area downsample would give 3 / 4.001).
    assert mutual_confidence(unet, foundation, [(1,)]).item() == pytest.approx(3 / 5.001)


def test_dice_rejects_named_regions() -> None:
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="eval_regions"):
        region_dice(a, a, [("cup", (1,))])


# ------------------------------------------------------------------------- alpha and ensemble


def test_alpha_strategies_per_sample() -> None:
    phi_self, phi_mutual = torch.tensor([0.5, 1.0]), torch.tensor([0.8, 0.2])
    cases = {
        "smc": [0.4, 0.2],
        "self": [0.5, 1.0],
        "mutual": [0.8, 0.2],
        "linear": [0.3, 0.3],
        "constant": [0.7, 0.7],
    }
    for strategy, expected in cases.items():
        alpha = ensemble_alpha(strategy, phi_self, phi_mutual, progress=0.3, constant=0.7)
        torch.testing.assert_close(alpha, torch.tensor(expected), msg=strategy)
    with pytest.raises(ValueError, match="cps"):
        ensemble_alpha("cps", phi_self, phi_mutual)
    # progress as the compiled step passes it: a 0-dim tensor; clamped to [0, 1] either way.
    for progress, expected in ((torch.tensor(0.3), 0.3), (1.5, 1.0), (torch.tensor(-0.2), 0.0)):
        alpha = ensemble_alpha("linear", None, phi_mutual, progress=progress)
        torch.testing.assert_close(alpha, torch.full((2,), expected))


def test_ensemble_by_hand() -> None:
    prob_unet = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)
    prob_found = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)
    out = ensemble_probs(prob_unet, prob_found, torch.tensor([0.5, 0.25]))
    # 0.5 * .9 + 0.5 * .2 = .55; 0.25 * .9 + 0.75 * .2 = .375.
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[0.55, 0.45], [0.375, 0.625]]))
    assert ensemble_probs(prob_unet, None, 1.0) is prob_unet
    assert ensemble_probs(None, prob_found, 0.0) is prob_found


def test_resize_probs_bilinear_and_skip() -> None:
    probs = torch.rand(1, 2, 4, 4)
    assert resize_probs(probs, 4) is probs
    expected = F.interpolate(probs, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_probs(probs, 8), expected)


def test_confidence_is_strict() -> None:
    probs = torch.tensor([[0.95, 0.05], [0.04, 0.96], [0.5, 0.5]]).T.reshape(1, 2, 1, 3)
    labels, weight = pseudo_label(probs, 0.95)
    assert labels.tolist() == [[[0, 1, 0]]]
    assert weight.tolist() == [[[0.0, 1.0, 0.0]]]  # exactly 0.95 is not confident
    assert weight.dtype == torch.float32


# --------------------------------------------------------------------------------- copy-paste


def _boxes(seed: int, batch: int = 8, size: int = 64) -> torch.Tensor:
    return sample_boxes(
        batch,
        size,
        area=(0.02, 0.4),
        ratio=(0.3, 1 / 0.3),
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )


def test_boxes_fit_and_areas_in_range() -> None:
    size = 64
    y0, x0, h, w = _boxes(0, batch=2000, size=size).unbind(1)
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + h <= size).all() and (x0 + w <= size).all()
    area = (h * w).float()
    assert (area <= 0.4 * size * size).all()
    # w, h = floor(sqrt(.)) so (w + 1)(h + 1) > drawn area >= 2 % of the image.
    assert ((h + 1) * (w + 1)).min() > 0.02 * size * size
    assert area.min() < 0.05 * size * size and area.max() > 0.35 * size * size


def _reference_boxes(n: int, size: int, seed: int) -> torch.Tensor:
    """The reference's host loop (``obtain_cutmix_box``): area once, then ratio and corner until
    it fits."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        area = rng.uniform(0.02, 0.4) * size * size
        while True:
            r = rng.uniform(0.3, 1 / 0.3)
            w, h = int(np.sqrt(area / r)), int(np.sqrt(area * r))
            x, y = rng.integers(0, size), rng.integers(0, size)
            if x + w <= size and y + h <= size:
                break
        rows.append((y, x, h, w))
    return torch.tensor(rows, dtype=torch.float64)


def test_boxes_follow_the_reference_distribution() -> None:
    # Rejecting whole (ratio, corner) draws favours squarer boxes and never yields full-side
    # strips; clamping w, h to the grid instead would give ~4 % strips and a mean h/w of ~1.8.
    n, size = 4000, 64
    ours = _boxes(1, batch=n, size=size).double()
    reference = _reference_boxes(n, size, seed=1)
    for boxes in (ours, reference):
        assert ((boxes[:, 2] == size) | (boxes[:, 3] == size)).double().mean() < 0.01
    ratio_ours, ratio_ref = (b[:, 2] / b[:, 3] for b in (ours, reference))
    assert abs(ratio_ours.mean() - ratio_ref.mean()) < 0.08  # ~1.65; standard error ~0.02
    for column in range(4):  # y0, x0, h, w; standard errors ~0.2-0.3 px
        assert abs(ours[:, column].mean() - reference[:, column].mean()) < 1.5


def test_same_seed_same_boxes() -> None:
    assert torch.equal(_boxes(3), _boxes(3))
    assert not torch.equal(_boxes(3), _boxes(4))


@pytest.mark.parametrize(
    ("size", "out_size"),
    [
        (384, 512),
        (384, 128),
        (256, 512),
        (256, 128),
        (288, 512),
        (288, 128),
        (256, 256),
        (128, 256),
        (16, 32),
        (16, 4),
        (10, 7),
    ],
)
def test_box_mask_is_the_nearest_resize_of_the_p_box(size: int, out_size: int) -> None:
    boxes = _boxes(1, batch=16, size=size)
    at_p = box_mask(boxes, size, size)
    y0, x0, h, w = boxes[0].tolist()
    assert at_p[0].sum() == h * w and at_p[0, y0 : y0 + h, x0 : x0 + w].all()
    expected = F.interpolate(at_p.unsqueeze(1).float(), size=(out_size, out_size), mode="nearest")
    assert torch.equal(box_mask(boxes, size, out_size), expected.squeeze(1).bool())


def test_boxes_cover_the_same_fractional_region() -> None:
    p, sizes = 384, (512, 128)
    boxes = _boxes(2, batch=16, size=p)
    for n in sizes:
        masks = box_mask(boxes, p, n)
        for (y0, x0, h, w), mask in zip(boxes.tolist(), masks):
            rows = mask.any(1).nonzero().flatten()
            cols = mask.any(0).nonzero().flatten()
            # Edges agree with the p box to within one output pixel.
            assert abs(rows[0].item() / n - y0 / p) <= 1 / n
            assert abs((rows[-1].item() + 1) / n - (y0 + h) / p) <= 1 / n
            assert abs(cols[0].item() / n - x0 / p) <= 1 / n
            assert abs((cols[-1].item() + 1) / n - (x0 + w) / p) <= 1 / n


def test_paste_images_and_labels() -> None:
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 2:4] = True
    strong, labeled = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mixed = paste(strong, labeled, mask)
    assert torch.equal(mixed, mask.unsqueeze(1).expand(1, 3, 4, 4).float())
    labels = paste(torch.full((1, 4, 4), 2), torch.ones(1, 4, 4, dtype=torch.long), mask)
    assert labels.dtype == torch.long and torch.equal(labels, torch.where(mask, 1, 2))


def test_mix_targets_inside_and_outside_the_box() -> None:
    b, p, s, sl = 2, 16, 32, 8
    labeled, unlabeled = _batches(b, p, s, sl, seed=5)
    teach = _Teaching(
        unet=_Target(torch.full((b, p, p), 2), torch.zeros(b, p, p)),
        foundation=_Target(torch.full((b, sl, sl), 2), torch.zeros(b, sl, sl)),
        weight_p=torch.zeros(b, p, p),
    )
    cfg = MethodConfig()
    draws = draw_boxes(b, torch.Generator().manual_seed(9), torch.device("cpu"))
    mixed = _mix(labeled, unlabeled, teach, cfg, draws)
    boxes = boxes_from_draws(draws, p, area=cfg.cp_area, ratio=cfg.cp_ratio)
    for size, target, gt in (
        (p, mixed.unet, labeled.mask_unet),
        (sl, mixed.foundation, labeled.mask_foundation),
    ):
        box = box_mask(boxes, p, size)
        assert box.any() and (~box).any()
        assert torch.equal(target.labels[box], gt[box])
        assert (target.labels[~box] == 2).all()
        assert torch.equal(target.weight, box.float())  # W = 1 inside, unchanged (0) outside
    for name, size in (("unet", p), ("foundation", s)):
        box = box_mask(boxes, p, size).unsqueeze(1).expand_as(getattr(labeled.images, name))
        got = getattr(mixed.images, name)
        assert torch.equal(got[box], getattr(labeled.images, name)[box])
        assert torch.equal(got[~box], getattr(unlabeled.strong, name)[~box])
    assert torch.equal(mixed.weight_p, box_mask(boxes, p, p).float())


# ---------------------------------------------------------------------------- stand-in models


class TinyUNet(nn.Module):
    """(B, 1, p, p) -> (B, K, p, p), with BatchNorm like the real U-Net."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, K, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyFoundation(nn.Module):
    """(B, 1, S, S) -> (B, K, S/4, S/4), like SAM's low-res logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, K, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 4)


class Recorder(nn.Module):
    """Wraps a model and records (batch size, grad enabled, input) of every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled(), x.detach().clone()))
        return self.model(x)


class Forbidden(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("this model must not run")


def _models(students: str = "both", seed: int = 0) -> Models:
    torch.manual_seed(seed)
    unet, found = TinyUNet(), TinyFoundation()
    models = Models(unet, make_teacher(unet), found, make_teacher(found))
    # Teachers differ from the students, as they do after some training.
    for teacher in (models.unet_teacher, models.foundation_teacher):
        for param in teacher.parameters():
            param.data.add_(0.1 * torch.randn_like(param))
    if students == "unet":
        models.foundation = models.foundation_teacher = None
    if students == "foundation":
        models.unet = models.unet_teacher = None
    return models


def _views(b: int, p: int, s: int, g: torch.Generator) -> Views:
    return Views(
        foundation=torch.rand(b, 1, s, s, generator=g), unet=torch.rand(b, 1, p, p, generator=g)
    )


def _batches(
    b: int = 2, p: int = 16, s: int = 32, sl: int = 8, seed: int = 0
) -> tuple[LabeledBatch, UnlabeledBatch]:
    g = torch.Generator().manual_seed(seed)
    labeled = LabeledBatch(
        images=_views(b, p, s, g),
        mask_foundation=torch.randint(0, K, (b, sl, sl), generator=g),
        mask_unet=torch.randint(0, K, (b, p, p), generator=g),
    )
    return labeled, UnlabeledBatch(weak=_views(b, p, s, g), strong=_views(b, p, s, g))


def _step(models: Models, cfg: MethodConfig, lam: float = 0.5, progress: float = 0.3, **sizes):
    labeled, unlabeled = _batches(**sizes)
    return synfoc_step(
        models,
        labeled,
        unlabeled,
        cfg=cfg,
        regions=REGIONS,
        lam=lam,
        progress=progress,
        box_draws=_draws(cfg, unlabeled),
    )


def _draws(cfg: MethodConfig, unlabeled: UnlabeledBatch, seed: int = 0):
    """The step's copy-paste draws, as the trainer makes them."""
    batch = unlabeled.weak.unet.shape[0]
    return draw_step_boxes(cfg, batch, torch.Generator().manual_seed(seed), torch.device("cpu"))


# --------------------------------------------------------------------------------- the step


def test_step_outputs_and_gradients() -> None:
    cfg = MethodConfig(threshold=0.4)
    models = _models()
    out = _step(models, cfg)
    assert torch.isfinite(out.loss) and out.loss.dim() == 0 and out.loss.requires_grad
    assert set(out.scalars) == set(expected_scalar_keys(cfg))
    required = {
        "sup/unet",
        "sup/foundation",
        "unsup/unet",
        "unsup/foundation",
        "cdcr/consensus",
        "cdcr/divergence",
        "lambda",
        "total",
        "smc/alpha",
        "smc/phi_self",
        "smc/phi_mutual",
        "pseudo/confident_ratio",
        "pseudo/mask_ratio",
    }
    assert required <= set(out.scalars)
    for name, value in out.scalars.items():
        assert value.dim() == 0 and not value.requires_grad, name
        assert value.device == out.loss.device and torch.isfinite(value), name
    assert out.scalars["lambda"].item() == 0.5
    for name in ("alpha", "phi_self", "phi_mutual"):
        assert getattr(out, name).shape == (2,)
    assert out.scalars["pseudo/mask_ratio"] >= out.scalars["pseudo/confident_ratio"]
    assert set(out.pseudo_labels) == {"unet", "foundation", "ensemble"}
    for labels in out.pseudo_labels.values():
        assert labels.shape == (2, 16, 16) and labels.dtype == torch.long
    out.loss.backward()
    for model in (models.unet, models.foundation):
        for name, param in model.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    for teacher in (models.unet_teacher, models.foundation_teacher):
        assert all(p.grad is None for p in teacher.parameters())


def test_total_is_the_weighted_sum() -> None:
    out = _step(_models(), MethodConfig(threshold=0.4), lam=0.25)
    s = out.scalars
    unsup = s["unsup/unet"] + s["unsup/foundation"] + s["cdcr/consensus"] + s["cdcr/divergence"]
    torch.testing.assert_close(
        out.loss.detach(), s["sup/unet"] + s["sup/foundation"] + 0.25 * unsup
    )


def test_zero_lambda_gives_the_supervised_loss() -> None:
    out = _step(_models(), MethodConfig(threshold=0.4), lam=0.0)
    s = out.scalars
    assert s["unsup/unet"] > 0  # the unsupervised terms exist but do not count
    assert out.loss.item() == (s["sup/unet"] + s["sup/foundation"]).item()
    assert _step(_models(), MethodConfig(threshold=0.4), lam=1.0).loss.item() > out.loss.item()


def test_forward_calls_and_grad_modes() -> None:
    models = _models()
    wrapped = Models(*(Recorder(m) for m in dataclasses.astuple(models)))
    _step(wrapped, MethodConfig())
    assert [(n, g) for n, g, _ in wrapped.unet_teacher.calls] == [(2, False)]
    assert [(n, g) for n, g, _ in wrapped.foundation_teacher.calls] == [(2, False)]
    # Student U-Net: weak view without grad (self-confidence), then ONE joint forward.
    assert [(n, g) for n, g, _ in wrapped.unet.calls] == [(2, False), (4, True)]
    assert [(n, g) for n, g, _ in wrapped.foundation.calls] == [(4, True)]


def test_joint_forward_inputs_are_labeled_then_mixed() -> None:
    models = Models(*(Recorder(m) for m in dataclasses.astuple(_models())))
    cfg = MethodConfig()
    _step(models, cfg)
    labeled, unlabeled = _batches()
    boxes = sample_boxes(
        2,
        16,
        area=cfg.cp_area,
        ratio=cfg.cp_ratio,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    for name, size in (("unet", 16), ("foundation", 32)):
        seen = getattr(models, name).calls[-1][2]
        assert torch.equal(seen[:2], getattr(labeled.images, name))
        box = box_mask(boxes, 16, size).unsqueeze(1)
        expected = torch.where(box, getattr(labeled.images, name), getattr(unlabeled.strong, name))
        assert torch.equal(seen[2:], expected)


def _valid(cfg: MethodConfig) -> bool:
    try:
        validate_method(cfg)
    except ValueError:
        return False
    return True


def test_every_combination_runs_one_step() -> None:
    ran = 0
    for students, alpha, consistency, sup_only, copy_paste in itertools.product(
        ("both", "unet", "foundation"),
        ("smc", "self", "mutual", "linear", "constant", "cps"),
        ("cdcr", "cr", "none"),
        (False, True),
        (False, True),
    ):
        cfg = MethodConfig(
            students=students,
            alpha=alpha,
            consistency=consistency,
            supervised_only=sup_only,
            copy_paste=copy_paste,
            threshold=0.4,
        )
        inconsistent = consistency != "none" and (students != "both" or sup_only)
        assert _valid(cfg) != inconsistent, cfg
        if inconsistent:
            continue
        models = _models(students)
        out = _step(models, cfg)
        assert torch.isfinite(out.loss), cfg
        assert set(out.scalars) == set(expected_scalar_keys(cfg)), cfg
        out.loss.backward()
        ran += 1
    # both: 6 alphas x 3 consistencies x 2; single students: 2 x 6 x 2; supervised only: 3 x 6 x 2.
    assert ran == 36 + 24 + 36


def test_cps_crosses_the_teachers() -> None:
    out = _step(_models(), MethodConfig(alpha="cps"))
    assert out.alpha is None and "smc/alpha" not in out.scalars
    # The U-Net's pseudo-label is the foundation teacher's, resized to p.
    assert torch.equal(out.pseudo_labels["ensemble"], out.pseudo_labels["foundation"])
    smc = _step(_models(), MethodConfig(alpha="smc"))
    assert not torch.equal(smc.pseudo_labels["ensemble"], smc.pseudo_labels["foundation"])


def test_linear_alpha_is_progress() -> None:
    out = _step(_models(), MethodConfig(alpha="linear"), progress=0.25)
    torch.testing.assert_close(out.alpha, torch.tensor([0.25, 0.25]))
    assert out.phi_self is None and out.phi_mutual is not None


def test_lambda_and_progress_as_tensors_give_the_float_step() -> None:
    """The compiled step takes lambda(t) and t / t_max as 0-dim device tensors: same numbers."""
    cfg = MethodConfig(alpha="linear")
    floats = _step(_models(), cfg, lam=0.4, progress=0.25)
    tensors = _step(_models(), cfg, lam=torch.tensor(0.4), progress=torch.tensor(0.25))
    torch.testing.assert_close(tensors.loss, floats.loss)
    assert tensors.scalars.keys() == floats.scalars.keys()
    for key, value in floats.scalars.items():
        torch.testing.assert_close(tensors.scalars[key], value, msg=key)


def test_single_student_uses_its_own_teacher() -> None:
    cfg = MethodConfig(students="unet", consistency="none")
    out = _step(_models("unet"), cfg)
    assert torch.equal(out.pseudo_labels["ensemble"], out.pseudo_labels["unet"])
    assert out.alpha is None and "sup/foundation" not in out.scalars
    cfg = MethodConfig(students="foundation", consistency="none")
    out = _step(_models("foundation"), cfg)
    assert set(out.pseudo_labels) == {"foundation", "ensemble"}


def test_supervised_only_never_runs_the_teachers() -> None:
    models = _models()
    models.unet_teacher = models.foundation_teacher = Forbidden()
    cfg = MethodConfig(supervised_only=True, consistency="none")
    out = _step(models, cfg)
    assert set(out.scalars) == {"sup/unet", "sup/foundation", "lambda", "total"}
    assert out.pseudo_labels == {} and out.alpha is None


def test_equal_patch_and_logits_sizes() -> None:
    # LiteMedSAM-like: foundation logits at the U-Net patch size (no resize branch).
    out = _step(_models(), MethodConfig(threshold=0.4), p=8, s=32, sl=8)
    assert torch.isfinite(out.loss)


def test_step_under_autocast_is_float32() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _step(_models(), MethodConfig(threshold=0.4))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.scalars["sup/unet"].dtype == torch.float32


def test_step_is_deterministic_given_the_generator() -> None:
    a, b = _step(_models(), MethodConfig()), _step(_models(), MethodConfig())
    assert a.loss.item() == b.loss.item()


def test_step_never_reads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    models = _models()
    labeled, unlabeled = _batches()

    def forbidden(*args, **kwargs):
        raise AssertionError("host read-back inside synfoc_step")

    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for cfg in (
        MethodConfig(),
        MethodConfig(alpha="cps", consistency="cr"),
        MethodConfig(students="foundation", consistency="none"),
    ):
        out = synfoc_step(
            models if cfg.students == "both" else _models(cfg.students),
            labeled,
            unlabeled,
            cfg=cfg,
            regions=REGIONS,
            lam=0.5,
            progress=0.5,
            box_draws=_draws(cfg, unlabeled),
        )
        out.loss.backward()
    monkeypatch.undo()
    assert math.isfinite(out.loss.item())


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"students": "sam"}, "method.students"),
        ({"alpha": "max"}, "method.alpha"),
        ({"consistency": "kl"}, "method.consistency"),
        ({"ramp": "cosine"}, "method.ramp"),
        ({"teacher_bn": "frozen"}, "method.teacher_bn"),
        ({"students": "unet"}, "method.consistency"),
        ({"supervised_only": True}, "supervised_only"),
        ({"threshold": 1.5}, "method.threshold"),
        ({"alpha_constant": -0.1}, "method.alpha_constant"),
        ({"cp_area": (0.5, 0.2)}, "method.cp_area"),
        ({"cp_ratio": (0.0, 1.0)}, "method.cp_ratio"),
        ({"consistency_weight": -1.0}, "method.consistency_weight"),
    ],
)
def test_validate_method_errors(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_method(dataclasses.replace(MethodConfig(), **changes))


def test_validate_method_accepts_defaults() -> None:
    validate_method(MethodConfig())


def test_step_input_errors() -> None:
    cfg = MethodConfig()
    labeled, unlabeled = _batches()
    kwargs = dict(cfg=cfg, regions=REGIONS, lam=1.0, progress=0.0, box_draws=_draws(cfg, unlabeled))
    with pytest.raises(ValueError, match="Models.foundation_teacher"):
        synfoc_step(
            dataclasses.replace(_models(), foundation_teacher=None), labeled, unlabeled, **kwargs
        )
    small = dataclasses.replace(labeled, mask_foundation=torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mask_foundation"):
        synfoc_step(_models(), small, unlabeled, **kwargs)
    labeled3, unlabeled3 = _batches(b=3)
    with pytest.raises(ValueError, match="same size"):
        synfoc_step(_models(), labeled3, unlabeled, **kwargs)
    with pytest.raises(ValueError, match="needs box_draws for the 2 unlabeled samples"):
        synfoc_step(_models(), labeled, unlabeled, **{**kwargs, "box_draws": None})
    with pytest.raises(ValueError, match=r"box_draws.*got \(3,\)"):
        synfoc_step(
            _models(), labeled, unlabeled, **{**kwargs, "box_draws": _draws(cfg, unlabeled3)}
        )
    with pytest.raises(ValueError, match="unlabeled.strong.unet"):
        bad = dataclasses.replace(
            unlabeled,
            strong=dataclasses.replace(unlabeled.strong, unet=unlabeled3.strong.unet[:, :, :8]),
        )
        synfoc_step(_models(), labeled, bad, **kwargs)
    no_unet_view = dataclasses.replace(unlabeled.weak, unet=None)
    with pytest.raises(ValueError, match="unlabeled.weak.unet is None"):
        foundation_only = MethodConfig(students="foundation", consistency="none")
        synfoc_step(
            _models("foundation"),
            labeled,
            dataclasses.replace(unlabeled, weak=no_unet_view),
            **{**kwargs, "cfg": foundation_only},
        )
