"""Networks: the U-Net and the foundation segmenters (SAM/MedSAM ViT, LiteMedSAM).

``build_unet`` and ``build_foundation`` are the only constructors the rest of the code needs.
``FOUNDATIONS`` is the registry of foundation models by name (``model.foundation`` in configs).
Every foundation segmenter is a :class:`PromptFreeSegmenter`: ``forward(images) -> logits``,
``input_size``, ``logits_size``, ``num_classes``, ``trainable_parameters()``,
``trainable_state_dict()``, ``load_trainable_state_dict()``, ``parameter_counts()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from networks.litemedsam import INPUT_SIZE as LITE_INPUT_SIZE
from networks.litemedsam import build_litemedsam_segmenter
from networks.pretrained import LoadReport
from networks.sam import build_sam_segmenter, load_sam_checkpoint
from networks.segmenter import PromptFreeSegmenter
from networks.unet import UNet

__all__ = [
    "CHECKPOINT_DIR",
    "FOUNDATIONS",
    "Foundation",
    "LoadReport",
    "PromptFreeSegmenter",
    "UNet",
    "build_foundation",
    "build_unet",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

# Where users put downloaded foundation weights (see checkpoints/README.md).
CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
MEDSAM_SOURCE = "the MedSAM release https://github.com/bowang-lab/MedSAM (model checkpoint link)"
SAM_SOURCE = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class Foundation:
    """A registered foundation model.

    ``build(num_classes, in_channels, image_size, checkpoint, lora_rank)`` returns the segmenter
    with its weights loaded; ``checkpoint_file``/``source`` name the weights a user must download
    (None: none needed); ``native_size`` is the input size the model's weights were trained at,
    used instead of the dataset's ViT default (None: that default), so callers choose
    ``config or native_size or dataset default``.
    """

    description: str
    build: Callable[[int, int, int | None, Path | None, int], PromptFreeSegmenter]
    checkpoint_file: str | None = None
    source: str | None = None
    native_size: int | None = None


def _vit(variant: str) -> Callable[..., PromptFreeSegmenter]:
    def build(num_classes, in_channels, image_size, checkpoint, lora_rank):
        segmenter = build_sam_segmenter(
            variant,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            lora_rank=lora_rank,
        )
        if checkpoint is not None:
            load_sam_checkpoint(segmenter, checkpoint)
        return segmenter

    return build


def _lite(num_classes, in_channels, image_size, checkpoint, lora_rank):
    return build_litemedsam_segmenter(
        num_classes=num_classes, in_channels=in_channels, lora_rank=lora_rank,
        checkpoint=checkpoint, input_size=image_size or LITE_INPUT_SIZE,
    )  # fmt: skip


FOUNDATIONS: dict[str, Foundation] = {
    "litemedsam": Foundation(
        "LiteMedSAM (TinyViT), packaged weights, 256 px", _lite, native_size=LITE_INPUT_SIZE
    ),
    "medsam_vit_b": Foundation("MedSAM ViT-B", _vit("vit_b"), "medsam_vit_b.pth", MEDSAM_SOURCE),
    "sam_vit_b": Foundation(
        "SAM ViT-B", _vit("vit_b"), "sam_vit_b_01ec64.pth", SAM_SOURCE + "sam_vit_b_01ec64.pth"
    ),
    "vit_l": Foundation(
        "SAM ViT-L", _vit("vit_l"), "sam_vit_l_0b3195.pth", SAM_SOURCE + "sam_vit_l_0b3195.pth"
    ),
    "vit_h": Foundation(
        "SAM ViT-H", _vit("vit_h"), "sam_vit_h_4b8939.pth", SAM_SOURCE + "sam_vit_h_4b8939.pth"
    ),
    # Random weights: the speed of a ViT-B run can be measured without downloading MedSAM.
    "vit_b_random": Foundation(
        "SAM ViT-B architecture, random weights (benchmarks)", _vit("vit_b")
    ),
    "tiny": Foundation("tiny random ViT for tests (64 px)", _vit("tiny")),
}


def resolve_checkpoint(name: str, checkpoint: str | Path | None) -> Path | None:
    """The weights file a foundation model will load: ``checkpoint``, else its default file
    under ``checkpoints/``; None for models that need none.

    Raises:
      FileNotFoundError: one line saying where to download the weights and where to put them.
    """
    entry = FOUNDATIONS[name]
    if entry.checkpoint_file is None:
        return None if checkpoint is None else Path(checkpoint)
    path = CHECKPOINT_DIR / entry.checkpoint_file if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"foundation {name!r} needs {entry.checkpoint_file}, not found at {path}: download it "
            f"from {entry.source} and put it at checkpoints/{entry.checkpoint_file} (or pass its "
            f"path as model.checkpoint / --checkpoint); 'litemedsam' needs no download"
        )
    return path


def build_foundation(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int | None = None,
    checkpoint: str | None = None,
    lora_rank: int = 4,
) -> PromptFreeSegmenter:
    """Build a registered foundation segmenter with its pretrained weights and LoRA.

    Arguments:
      name (str): a key of ``FOUNDATIONS``.
      num_classes (int): foreground classes C (logits have C + 1 channels).
      in_channels (int): 1 or 3 image channels.
      image_size (int or None): ViT input size (multiple of 16); None = 512 (64 for ``tiny``).
        LiteMedSAM: None = 256 (the packaged model), or any multiple of 32 (reduced studies).
      checkpoint (str or None): weights file; None = ``checkpoints/<default file>`` for the ViT
        models, the packaged weights for LiteMedSAM, random weights for ``tiny``.
      lora_rank (int): LoRA rank on q and v of every encoder attention layer.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or bad sizes.
      FileNotFoundError: a ViT model's weights are missing (the message says where to get them).
    """
    if name not in FOUNDATIONS:
        raise ValueError(f"unknown foundation model {name!r}; expected one of {list(FOUNDATIONS)}")
    path = resolve_checkpoint(name, checkpoint)
    segmenter = FOUNDATIONS[name].build(num_classes, in_channels, image_size, path, lora_rank)
    if segmenter.load_report is None:
        logger.info("%s: randomly initialised (no checkpoint)", name)
    return segmenter


def build_unet(in_channels: int, num_classes: int, width: int = 64) -> UNet:
    """The reference U-Net: (B, in_channels, H, W) -> (B, num_classes + 1, H, W) logits."""
    return UNet(in_channels, num_classes, base_width=width)
