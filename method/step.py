"""The SynFoC (Ma et al., CVPR 2025) training step, up to the loss.

``synfoc_step`` takes the four models (two students, two EMA teachers), one labeled and one
unlabeled batch already on the training device, and returns the total loss with detached device
scalars for logging. It owns no optimizer, no EMA, no logging and no I/O (the loop does), and it
never reads a tensor back to the host, so the loop can call it every iteration and synchronise
only when it logs. Unlabeled batches carry no labels, so unlabeled ground truth cannot reach a
loss (the reference computed a Dice on it inside its step, for logging only): ground-truth
diagnostics belong to the loop, on the returned ``pseudo_labels``.

Its parts: the batch and model types in :mod:`method.batches`, the switches in
:mod:`method.config`, Self-Mutual Confidence and the pseudo-labels in :mod:`method.smc`, the
copy-paste of intermediate samples in :mod:`method.copy_paste`, the losses in
:mod:`method.losses` and lambda(t) in :mod:`method.schedules`. Notation
(paper -> code): P^MS = foundation-teacher softmax at the logits size Sl; P^UT = U-Net teacher
softmax at the patch size p; M = ``boxes_from_draws``/``box_mask``. docs/METHOD.md maps every
equation and decision to these functions.

The step draws no random numbers itself: the copy-paste boxes come from ``box_draws``, which the
caller draws with :func:`draw_step_boxes`. It is therefore a function of its inputs alone, which
``torch.compile`` can capture whole (``train.compile_scope=step``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from method.batches import (
    LabeledBatch,
    Models,
    StepOutput,
    UnlabeledBatch,
    Views,
    check_batches,
    check_logits,
    check_models,
)
from method.config import MethodConfig, trained_students
from method.copy_paste import BoxDraws, box_mask, boxes_from_draws, draw_boxes, paste
from method.losses import (
    consensus_divergence_losses,
    consistency_mse,
    supervised_loss,
    unsupervised_loss,
)
from method.smc import (
    ensemble_alpha,
    ensemble_probs,
    mutual_confidence,
    pseudo_label,
    resize_probs,
    self_confidence,
    softmax,
)


@dataclass
class _Target:
    labels: Tensor  # (B, H, W) int64
    weight: Tensor  # (B, H, W) float32 in {0, 1}


@dataclass
class _Teaching:
    """Teacher-side results on the weak unlabeled view (no grad)."""

    unet: _Target | None = None  # U-Net student's target at p
    foundation: _Target | None = None  # foundation student's target at Sl
    weight_p: Tensor | None = None  # (B, p, p) W at p before the paste (diagnostics)
    pseudo_labels: dict[str, Tensor] = field(default_factory=dict)
    alpha: Tensor | None = None
    phi_self: Tensor | None = None
    phi_mutual: Tensor | None = None


@dataclass
class _Mixed:
    images: Views
    unet: _Target | None
    foundation: _Target | None
    weight_p: Tensor  # (B, p, p) W at p after the paste (diagnostics)


def _dual_alphas(
    models: Models,
    weak: Views,
    cfg: MethodConfig,
    regions: Sequence[Sequence[int]],
    progress: float | Tensor,
    prob_ms: Tensor,
    out: _Teaching,
) -> tuple[Tensor | float, Tensor | float]:
    """SMC with both students: fills out.phi_*, out.alpha; returns (alpha_unet, alpha_found)."""
    teacher_u = out.pseudo_labels["unet"]
    out.phi_mutual = mutual_confidence(teacher_u, prob_ms.argmax(1), regions)
    if cfg.alpha in ("smc", "self"):
        # Student U-Net on the weak view, under no_grad (the reference keeps an unused graph).
        out.phi_self = self_confidence(models.unet(weak.unet).argmax(1), teacher_u, regions)
    if cfg.alpha == "cps":
        # Cross pseudo supervision: each student learns from the OTHER model's teacher.
        return 0.0, 1.0
    out.alpha = ensemble_alpha(
        cfg.alpha, out.phi_self, out.phi_mutual, progress=progress, constant=cfg.alpha_constant
    )
    return out.alpha, out.alpha


@torch.no_grad()
def _teach(
    models: Models,
    weak: Views,
    cfg: MethodConfig,
    regions: Sequence[Sequence[int]],
    progress: float | Tensor,
) -> _Teaching:
    """Teachers, SMC, ensemble and confidence masks (steps 1-3 of the iteration)."""
    train_u, train_f = trained_students(cfg)
    p = weak.unet.shape[-1]
    out = _Teaching()
    prob_ut = softmax(models.unet_teacher(weak.unet)) if train_u else None
    prob_ms = softmax(models.foundation_teacher(weak.foundation)) if train_f else None
    prob_ms_p = resize_probs(prob_ms, p) if train_f else None
    if train_u:
        out.pseudo_labels["unet"] = prob_ut.argmax(1)
    if train_f:
        out.pseudo_labels["foundation"] = prob_ms_p.argmax(1)
    # A single student learns from its own teacher alone (Base-U-Net / Base-MedSAM).
    alpha_u, alpha_f = (1.0, 0.0) if train_u else (0.0, 0.0)
    if cfg.students == "both":
        alpha_u, alpha_f = _dual_alphas(models, weak, cfg, regions, progress, prob_ms, out)
    probs_p = ensemble_probs(prob_ut, prob_ms_p, alpha_u)
    labels_p, out.weight_p = pseudo_label(probs_p, cfg.threshold)
    out.pseudo_labels["ensemble"] = labels_p
    if train_u:
        out.unet = _Target(labels_p, out.weight_p)
    if train_f:
        if not train_u:
            probs_f = prob_ms  # the teacher's own resolution, no round trip through p
        elif alpha_f is alpha_u:
            probs_f = resize_probs(probs_p, prob_ms.shape[-1])
        else:
            probs_f = resize_probs(ensemble_probs(prob_ut, prob_ms_p, alpha_f), prob_ms.shape[-1])
        out.foundation = _Target(*pseudo_label(probs_f, cfg.threshold))
    return out


def _paste_target(target: _Target, ground_truth: Tensor, box: Tensor) -> _Target:
    return _Target(paste(target.labels, ground_truth, box), target.weight.masked_fill(box, 1.0))


def _mix(
    labeled: LabeledBatch,
    unlabeled: UnlabeledBatch,
    teach: _Teaching,
    cfg: MethodConfig,
    box_draws: BoxDraws,
) -> _Mixed:
    """Copy-paste (step 4): a weak labeled box into the strong unlabeled images and targets."""
    strong = unlabeled.strong
    if teach.foundation is not None:
        check_logits(
            "foundation teacher",
            teach.foundation.labels,
            "labeled.mask_foundation",
            labeled.mask_foundation,
        )
    if not cfg.copy_paste:
        return _Mixed(strong, teach.unet, teach.foundation, teach.weight_p)
    p = strong.unet.shape[-1]
    boxes = boxes_from_draws(box_draws, p, area=cfg.cp_area, ratio=cfg.cp_ratio)
    box_p = box_mask(boxes, p, p)
    images = Views(foundation=None, unet=paste(strong.unet, labeled.images.unet, box_p))
    target_u = target_f = None
    if teach.unet is not None:
        target_u = _paste_target(teach.unet, labeled.mask_unet, box_p)
    if strong.foundation is not None:
        box_s = box_mask(boxes, p, strong.foundation.shape[-1])
        images.foundation = paste(strong.foundation, labeled.images.foundation, box_s)
        if teach.foundation is not None:
            box_sl = box_mask(boxes, p, labeled.mask_foundation.shape[-1])
            target_f = _paste_target(teach.foundation, labeled.mask_foundation, box_sl)
    return _Mixed(images, target_u, target_f, teach.weight_p.masked_fill(box_p, 1.0))


def _joint_forward(model: nn.Module, labeled: Tensor, mixed: Tensor) -> tuple[Tensor, Tensor]:
    """One forward over [labeled; mixed] (BatchNorm sees both), split back into the two parts."""
    logits = model(torch.cat([labeled, mixed]))
    return logits[: labeled.shape[0]], logits[labeled.shape[0] :]


def _student_terms(
    models: Models, labeled: LabeledBatch, mixed: _Mixed | None, cfg: MethodConfig
) -> dict[str, Tensor]:
    """Student forwards and loss terms (steps 5-7); ``mixed`` None = supervised only."""
    terms: dict[str, Tensor] = {}
    mixed_probs: dict[str, Tensor] = {}
    train_u, train_f = trained_students(cfg)
    for name, trains, model, mask_name in (
        ("unet", train_u, models.unet, "mask_unet"),
        ("foundation", train_f, models.foundation, "mask_foundation"),
    ):
        if not trains:
            continue
        images, mask = getattr(labeled.images, name), getattr(labeled, mask_name)
        if mixed is None:
            lab_logits = model(images)
        else:
            lab_logits, mix_logits = _joint_forward(model, images, getattr(mixed.images, name))
            target = getattr(mixed, name)
            terms[f"unsup/{name}"] = unsupervised_loss(mix_logits, target.labels, target.weight)
            mixed_probs[name] = softmax(mix_logits)
        check_logits(f"{name} student", lab_logits, f"labeled.{mask_name}", mask)
        terms[f"sup/{name}"] = supervised_loss(lab_logits, mask)
    if cfg.consistency == "cdcr":
        terms["cdcr/consensus"], terms["cdcr/divergence"] = consensus_divergence_losses(
            mixed_probs["foundation"], mixed_probs["unet"]
        )
    elif cfg.consistency == "cr":
        terms["cr/mse"] = consistency_mse(mixed_probs["foundation"], mixed_probs["unet"])
    return terms


def _combine(terms: dict[str, Tensor], lam: float | Tensor) -> Tensor:
    """total = sum of supervised terms + lam * sum of the others (paper Eq. 2 with Eq. 7-10)."""
    supervised = [v for k, v in terms.items() if k.startswith("sup/")]
    others = [v for k, v in terms.items() if not k.startswith("sup/")]
    loss = sum(supervised[1:], supervised[0])
    if others:
        loss = loss + lam * sum(others[1:], others[0])
    return loss


def draw_step_boxes(
    cfg: MethodConfig, batch: int, generator: torch.Generator, device: torch.device
) -> BoxDraws | None:
    """The random numbers one :func:`synfoc_step` needs: the copy-paste boxes of its ``batch``
    unlabeled samples, or None when ``cfg`` pastes nothing. The trainer draws them from its
    generator right after the batches' augmentation."""
    if cfg.supervised_only or not cfg.copy_paste:
        return None
    return draw_boxes(batch, generator, device)


def synfoc_step(
    models: Models,
    labeled: LabeledBatch,
    unlabeled: UnlabeledBatch,
    *,
    cfg: MethodConfig,
    regions: Sequence[Sequence[int]],
    lam: float | Tensor,
    progress: float | Tensor,
    box_draws: BoxDraws | None = None,
) -> StepOutput:
    """One SynFoC iteration up to the loss (no backward, no optimizer, no EMA).

    Order: teachers on the weak unlabeled view (no grad) -> SMC alpha -> ensemble pseudo-labels
    and confidence masks at p and Sl -> copy-paste -> one forward per student over
    [labeled; mixed] -> supervised, masked unsupervised and CDCR/CR terms ->
    total = sup_f + sup_u + lam * (unsup_f + unsup_u + L_c + L_d). Call :func:`validate_method`
    once beforehand; this function does not re-validate the choices.

    Args:
        models: students and teachers (None where ``cfg.students`` does not train a model;
            teachers unused with ``cfg.supervised_only``). Mode (train/eval) is the caller's.
        labeled: weak labeled views and masks at p and at the foundation logits size Sl.
        unlabeled: weak and strong views (same geometry); same batch size as ``labeled`` when
            ``cfg.copy_paste``.
        cfg: the method switches.
        regions: class indices of each SMC region, ``[c for _, c in spec.eval_regions]``.
        lam: lambda(t) from :func:`method.schedules.consistency_ramp`: a float, or a 0-dim
            tensor on the device (a compiled step then takes it as an input, not a constant).
        progress: t / t_max in [0, 1] (alpha strategy ``linear``), float or 0-dim tensor.
        box_draws: the copy-paste boxes' random numbers, from :func:`draw_step_boxes`; needed
            when ``cfg.copy_paste`` (and not ``cfg.supervised_only``).

    Returns:
        :class:`StepOutput`; scalar keys are :func:`expected_scalar_keys` (cfg).

    Raises:
        ValueError: for a missing model or inconsistent shapes (host metadata only).
    """
    check_models(models, cfg)
    if cfg.supervised_only:
        terms = _student_terms(models, labeled, None, cfg)
        return _output(_combine(terms, lam), terms, lam)
    check_batches(labeled, unlabeled, cfg, box_draws)
    teach = _teach(models, unlabeled.weak, cfg, regions, progress)
    mixed = _mix(labeled, unlabeled, teach, cfg, box_draws)
    terms = _student_terms(models, labeled, mixed, cfg)
    out = _output(_combine(terms, lam), {**terms, **_teaching_scalars(teach, mixed)}, lam)
    out.alpha, out.phi_self, out.phi_mutual = teach.alpha, teach.phi_self, teach.phi_mutual
    out.pseudo_labels = teach.pseudo_labels
    return out


def _teaching_scalars(teach: _Teaching, mixed: _Mixed) -> dict[str, Tensor]:
    """Batch means of the confidence masks and of the SMC weights, 0-dim, for logging."""
    scalars = {
        "pseudo/confident_ratio": teach.weight_p.mean(),
        "pseudo/mask_ratio": mixed.weight_p.mean(),
    }
    for key in ("alpha", "phi_self", "phi_mutual"):
        value = getattr(teach, key)
        if value is not None:
            scalars[f"smc/{key}"] = value.mean()
    return scalars


def _output(loss: Tensor, scalars: dict[str, Tensor], lam: float | Tensor) -> StepOutput:
    detached = {k: v.detach() for k, v in scalars.items()}
    if isinstance(lam, Tensor):
        detached["lambda"] = lam.detach().float()
    else:  # torch.full launches a fill kernel: no host-to-device copy
        detached["lambda"] = torch.full((), float(lam), device=loss.device)
    detached["total"] = loss.detach()
    return StepOutput(loss=loss, scalars=detached)
