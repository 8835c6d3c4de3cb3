"""What one SynFoC step takes and returns: the batches at both input sizes, the four networks
and the step's output, with the shape checks the step runs on them (host metadata only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from method.config import MethodConfig, trained_students
from method.copy_paste import BoxDraws


@dataclass
class Views:
    """One batch of images at both model input sizes, float in [0, 1]."""

    foundation: Tensor | None  # (B, Cin, S, S); None when no foundation model is trained
    # (B, Cin, p, p); always given, also without a U-Net: the patch size p is the grid of the
    # pseudo-labels, SMC and the copy-paste boxes.
    unet: Tensor


@dataclass
class LabeledBatch:
    images: Views  # weak view
    mask_foundation: Tensor | None  # (B, Sl, Sl) int64 class indices at the foundation logits size
    mask_unet: Tensor  # (B, p, p) int64 class indices


@dataclass
class UnlabeledBatch:
    """Unlabeled images; no label field, by construction: no unlabeled ground truth in the step."""

    weak: Views
    strong: Views  # same geometry as ``weak`` (pixel-aligned), photometric changes only


@dataclass
class Models:
    """The four networks; None for a model this configuration does not train.

    Students map images to logits: U-Net (B, Cin, p, p) -> (B, K, p, p); foundation
    (B, Cin, S, S) -> (B, K, Sl, Sl), K = C + 1.
    """

    unet: nn.Module | None = None
    unet_teacher: nn.Module | None = None
    foundation: nn.Module | None = None
    foundation_teacher: nn.Module | None = None


@dataclass
class StepOutput:
    loss: Tensor  # 0-dim, with grad
    scalars: dict[str, Tensor]  # detached 0-dim device tensors, keys = expected_scalar_keys(cfg)
    alpha: Tensor | None = None  # (B,) ensemble weight of the U-Net teacher
    phi_self: Tensor | None = None  # (B,)
    phi_mutual: Tensor | None = None  # (B,)
    # (B, p, p) int64 pseudo-labels on the weak unlabeled view, before the paste, diagnostics only.
    pseudo_labels: dict[str, Tensor] = field(default_factory=dict)


def check_models(models: Models, cfg: MethodConfig) -> None:
    train_u, train_f = trained_students(cfg)
    needed = ["unet"] * train_u + ["foundation"] * train_f
    if not cfg.supervised_only:
        needed += [f"{n}_teacher" for n in needed]
    missing = [n for n in needed if getattr(models, n) is None]
    if missing:
        raise ValueError(
            f"method.students={cfg.students!r} (supervised_only={cfg.supervised_only}) needs "
            f"Models.{', Models.'.join(missing)}, which is None"
        )


def check_batches(
    labeled: LabeledBatch,
    unlabeled: UnlabeledBatch,
    cfg: MethodConfig,
    box_draws: BoxDraws | None,
) -> None:
    """Shape checks (host metadata only)."""
    for where, views in (
        ("labeled.images", labeled.images),
        ("unlabeled.weak", unlabeled.weak),
        ("unlabeled.strong", unlabeled.strong),
    ):
        if views.unet is None:
            raise ValueError(
                f"{where}.unet is None; the view at the patch size p is needed also without a "
                "U-Net student (p is the grid of the pseudo-labels and copy-paste boxes)"
            )
    for name in ("foundation", "unet"):
        if getattr(labeled.images, name) is None:  # a model this configuration does not train
            continue
        reference = getattr(labeled.images, name).shape
        for view in ("weak", "strong"):
            got = getattr(getattr(unlabeled, view), name).shape
            if got[1:] != reference[1:] or got[0] != unlabeled.weak.unet.shape[0]:
                raise ValueError(
                    f"unlabeled.{view}.{name} is {tuple(got)}; expected (B_u, *"
                    f"{tuple(reference[1:])}) like labeled.images.{name} {tuple(reference)}"
                )
    if labeled.mask_unet.shape[-2:] != labeled.images.unet.shape[-2:]:
        raise ValueError(
            f"labeled.mask_unet is {tuple(labeled.mask_unet.shape)}; expected the U-Net input "
            f"size {tuple(labeled.images.unet.shape[-2:])}"
        )
    n_lab, n_unl = labeled.images.unet.shape[0], unlabeled.weak.unet.shape[0]
    if cfg.copy_paste and n_lab != n_unl:
        raise ValueError(
            f"copy-paste pairs labeled sample i with unlabeled sample i: the labeled batch "
            f"({n_lab}) and the unlabeled batch ({n_unl}) must have the same size"
        )
    if cfg.copy_paste and (box_draws is None or box_draws.area.shape[0] != n_unl):
        got = None if box_draws is None else tuple(box_draws.area.shape)
        raise ValueError(
            f"method.copy_paste needs box_draws for the {n_unl} unlabeled samples "
            f"(draw_step_boxes); got {got}"
        )


def check_logits(model: str, logits: Tensor, mask_name: str, mask: Tensor) -> None:
    if logits.shape[-2:] != mask.shape[-2:]:
        raise ValueError(
            f"{model} logits are {tuple(logits.shape)} but {mask_name} is {tuple(mask.shape)}; "
            "the mask must be at the logits size"
        )
