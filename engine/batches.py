"""The training batches of one run, drawn, gathered and augmented on the device.

The whole decoded training set (uint8 canvases) lives on the device; each iteration draws
labeled and unlabeled indices (:class:`~dataloaders.sampler.RandomBatches`), gathers their
canvases, augments them there (weak for both, strong on top of the weak unlabeled view) and
resizes them to each model's input. Nothing is read back to the host.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dataloaders.datasets import CachedSamples
from dataloaders.geometry import resize_images, resize_masks
from dataloaders.sampler import RandomBatches
from dataloaders.specs import DatasetSpec
from dataloaders.transforms import AugmentParams, strong_augment, weak_augment
from engine.build import Sizes
from method.batches import LabeledBatch, UnlabeledBatch, Views


class UnlabeledTruth(NamedTuple):
    """Ground truth of an unlabeled batch, for the loop's diagnostics only: the step never sees
    it."""

    masks: torch.Tensor  # (B, P, P) class indices at the patch size
    domains: torch.Tensor  # (B,) int64, 0-based index into spec.domains


class TrainBatches:
    """Endless augmented batches of ``batch_size`` labeled and unlabeled samples.

    Args:
        labeled, unlabeled: the decoded training sets; moved to ``device`` here.
        spec: the dataset's spec (augmentation ranges, rotation fill class).
        sizes: the run's resolutions (patch, foundation input and logits).
        batch_size: samples per batch, the same for both streams (copy-paste pairs them).
        generator: the run's random generator on ``device`` (indices and augmentation).
    """

    def __init__(
        self,
        labeled: CachedSamples,
        unlabeled: CachedSamples,
        spec: DatasetSpec,
        sizes: Sizes,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
    ):
        self.labeled, self.unlabeled = labeled, unlabeled
        for samples in (labeled, unlabeled):
            samples.images = samples.images.to(device)
            samples.masks = samples.masks.to(device)
            samples.domains = samples.domains.to(device)
        self.sizes, self.generator = sizes, generator
        self.augment = AugmentParams.from_spec(spec)
        self.fill_class = spec.rotation_fill_class
        self.labeled_indices = RandomBatches(len(labeled.names), batch_size, generator, device)
        self.unlabeled_indices = RandomBatches(len(unlabeled.names), batch_size, generator, device)

    def views(self, images: torch.Tensor) -> Views:
        """Canvas images (B, C, Sc, Sc) float in [0, 1] at the foundation input and the patch."""
        sizes = self.sizes
        foundation = resize_images(images, sizes.foundation) if sizes.foundation else None
        return Views(foundation=foundation, unet=resize_images(images, sizes.patch))

    def next(self) -> tuple[LabeledBatch, UnlabeledBatch, UnlabeledTruth]:
        """Augmented labeled and unlabeled batches, and the unlabeled ground truth at the patch
        size with each image's domain (for diagnostics only: it never reaches the step)."""
        g, fill, sizes = self.generator, self.fill_class, self.sizes
        li, ui = self.labeled_indices.next(), self.unlabeled_indices.next()
        lab, unl = self.labeled, self.unlabeled
        lx, ly = weak_augment(lab.images[li], lab.masks[li], g, self.augment, fill_class=fill)
        ux, uy = weak_augment(unl.images[ui], unl.masks[ui], g, self.augment, fill_class=fill)
        strong = strong_augment(ux, g, self.augment)
        mask_foundation = resize_masks(ly, sizes.logits) if sizes.logits else None
        labeled = LabeledBatch(self.views(lx), mask_foundation, resize_masks(ly, sizes.patch))
        unlabeled = UnlabeledBatch(weak=self.views(ux), strong=self.views(strong))
        truth = UnlabeledTruth(resize_masks(uy, sizes.patch), unl.domains[ui])
        return labeled, unlabeled, truth

    def state_dict(self) -> dict[str, Any]:
        """Positions of both index streams (the generator is saved by the caller)."""
        return {
            "labeled": self.labeled_indices.state_dict(),
            "unlabeled": self.unlabeled_indices.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labeled_indices.load_state_dict(state["labeled"])
        self.unlabeled_indices.load_state_dict(state["unlabeled"])
