"""Build what a run needs from its config: device, models, sizes, data and predictors.

Shared by the trainer, ``test.py`` and ``scripts/bench.py`` so that all three construct exactly
the same objects from the same config.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dataloaders.geometry import resize_images
from dataloaders.settings import resolve_setting
from dataloaders.specs import DatasetSpec
from dataloaders.splits import DataSplits, build_splits
from engine.config import Config, ConfigError
from engine.ema import make_teacher
from evaluation.evaluate import Predictor
from method.batches import Models
from networks import FOUNDATIONS, build_foundation, build_unet
from networks.sam import check_vit_attention, set_vit_attention

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sizes:
    """Square resolutions of one run, in pixels.

    ``canvas``: cached images and augmentation; ``patch``: U-Net input and metric resolution;
    ``foundation`` / ``logits``: foundation-model input and output (None without a foundation).
    """

    canvas: int
    patch: int
    foundation: int | None
    logits: int | None


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; otherwise ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ConfigError: for a name torch does not know, or a device this machine does not have.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("device: %s (auto)", device)
        return device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def configure_backend(device: torch.device, deterministic: bool) -> None:
    """Fast defaults on CUDA (TF32, cuDNN autotuning) unless determinism is asked for."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation; data use their own generator)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trains_unet(config: Config) -> bool:
    return config.method.students in ("both", "unet")


def trains_foundation(config: Config) -> bool:
    return config.method.students in ("both", "foundation")


def build_students(config: Config, spec: DatasetSpec) -> tuple[nn.Module | None, nn.Module | None]:
    """The U-Net and foundation students this config trains (None for the one it does not)."""
    unet = foundation = None
    if trains_unet(config):
        unet = build_unet(spec.in_channels, spec.num_classes, width=config.model.unet_width)
    if trains_foundation(config):
        name = config.model.foundation
        if name not in FOUNDATIONS:
            raise ConfigError(
                f"model.foundation: unknown {name!r}; expected one of {list(FOUNDATIONS)}"
            )
        try:  # before the (slow) build
            check_vit_attention(config.model.vit_attention)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        # A model trained at one input size (LiteMedSAM: 256) ignores the dataset's ViT default
        # (512); model.image_size still overrides it.
        native = FOUNDATIONS[name].native_size
        foundation = build_foundation(
            name,
            num_classes=spec.num_classes,
            in_channels=spec.in_channels,
            image_size=config.model.image_size or native or spec.foundation_size,
            checkpoint=config.model.checkpoint,
            lora_rank=config.model.lora_rank,
        )
        set_vit_attention(foundation, config.model.vit_attention)
    return unet, foundation


def build_models(config: Config, spec: DatasetSpec, device: torch.device) -> Models:
    """Students and their EMA teachers on ``device`` (U-Net channels-last on CUDA)."""
    unet, foundation = build_students(config, spec)
    if unet is not None and device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    teachers_needed = not config.method.supervised_only

    def pair(student: nn.Module | None) -> tuple[nn.Module | None, nn.Module | None]:
        if student is None:
            return None, None
        student = student.to(device)
        return student, make_teacher(student) if teachers_needed else None

    unet, unet_teacher = pair(unet)
    foundation, foundation_teacher = pair(foundation)
    return Models(unet, unet_teacher, foundation, foundation_teacher)


def run_sizes(config: Config, spec: DatasetSpec, models: Models) -> Sizes:
    """Resolutions implied by the config and the built models."""
    patch = config.data.patch_size or spec.patch_size
    foundation = logits = None
    if models.foundation is not None:
        foundation, logits = models.foundation.input_size, models.foundation.logits_size
    canvas = config.data.canvas_size or max(patch, foundation or 0)
    return Sizes(canvas=canvas, patch=patch, foundation=foundation, logits=logits)


def build_data(
    config: Config, spec: DatasetSpec, sizes: Sizes, progress: bool = True
) -> DataSplits:
    """Decoded, cached labeled / unlabeled / test (and validation) sets of the config's dataset."""
    if config.data.labeled_bs != config.data.unlabeled_bs:
        raise ConfigError(
            "data.labeled_bs and data.unlabeled_bs must be equal: copy-paste pairs labeled "
            f"sample i with unlabeled sample i (got {config.data.labeled_bs} and "
            f"{config.data.unlabeled_bs})"
        )
    return build_splits(
        spec,
        config.data.root,
        config.data.lb_domain,
        config.data.lb_num,
        canvas_size=sizes.canvas,
        patch_size=sizes.patch,
        lb_seed=config.data.lb_seed,
        labeled_bs=config.data.labeled_bs,
        unlabeled_bs=config.data.unlabeled_bs,
        val_fraction=config.data.val_fraction,
        setting=config.data.setting,
        unlabeled_domains=config.data.unlabeled_domains,
        eval_domains=config.data.eval_domains,
        progress=progress,
    )


def evaluated_domains(config: Config, spec: DatasetSpec) -> tuple[int, ...]:
    """0-based domains the config's setting tests (``data.setting``, ``data.eval_domains``)."""
    data = config.data
    setting = resolve_setting(
        spec, data.setting, data.lb_domain, data.lb_num, data.unlabeled_domains, data.eval_domains
    )
    return setting.eval_domains


def model_predictor(model: nn.Module, input_size: int) -> Predictor:
    """Canvas images (B, C, Sc, Sc) in [0, 1] -> the model's logits at its own output size."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        return model(resize_images(images, input_size))

    return predict


def build_predictors(
    models: Models, sizes: Sizes, names: tuple[str, ...], teachers: bool = False
) -> dict[str, Predictor]:
    """Predictors for the requested students (``unet`` / ``foundation``) that exist in ``models``,
    plus their teachers (``<name>_teacher``) when asked."""
    inputs = {"unet": sizes.patch, "foundation": sizes.foundation}
    predictors = {}
    for name in names:
        for suffix in ("", "_teacher") if teachers else ("",):
            model = getattr(models, name + suffix)
            if model is not None:
                predictors[name + suffix] = model_predictor(model, inputs[name])
    return predictors
