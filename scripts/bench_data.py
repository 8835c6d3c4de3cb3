"""What a bench runs on: the bench table, random-blob data written in a dataset's native layout
and sized like the real sets, and the config that points the trainer at them (``scripts/bench.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from dataloaders.specs import DatasetSpec
from engine.config import Config, load_config

# bench name -> (config file, overrides, train images per domain, test images per domain)
BENCHES = {
    "prostate": ("configs/prostate.yaml", ["model.foundation=vit_b_random"], 40, 50),
    "busi": ("configs/busi.yaml", ["model.foundation=litemedsam"], 40, 50),
    # The paper's fundus and M&Ms settings (MedSAM ViT-B), timed compiled on a GPU.
    "fundus": ("configs/fundus.yaml", ["model.foundation=vit_b_random"], 40, 50),
    "mnms": ("configs/mnms.yaml", ["model.foundation=vit_b_random"], 40, 50),
    "tiny": (
        "configs/demo.yaml",
        ["model.foundation=tiny", "model.image_size=64", "model.unet_width=8",
         "data.patch_size=64", "data.labeled_bs=2", "data.unlabeled_bs=2"],
        8, 4,
    ),
}  # fmt: skip
MEDSAM_CHECKPOINT = Path("checkpoints/medsam_vit_b.pth")


def _raw_value(spec: DatasetSpec, class_index: int):
    return next(raw for raw, index in spec.mask_encoding if index == class_index)


def _sample(
    spec: DatasetSpec, rng: np.random.Generator, size: int
) -> tuple[Image.Image, Image.Image]:
    """One image with an ellipse per foreground class, and its mask in the spec's raw encoding."""
    yy, xx = np.mgrid[:size, :size] / size
    image = rng.normal(60, 12, (size, size))
    classes = np.zeros((size, size), np.uint8)
    for index in range(1, spec.num_classes + 1):
        cy, cx, ry, rx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), *rng.uniform(0.08, 0.25, 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        classes[inside] = index
        image[inside] += 40 * index
    raw = np.zeros((size, size, 3) if spec.mask_mode == "RGB" else (size, size), np.uint8)
    for index in range(spec.num_classes + 1):
        raw[classes == index] = _raw_value(spec, index)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    mode = "L" if spec.in_channels == 1 else "RGB"
    picture = Image.fromarray(pixels).convert(mode)
    return picture, Image.fromarray(raw, spec.mask_mode)


def write_fake_dataset(spec: DatasetSpec, root: Path, train: int, test: int, size: int) -> Path:
    """Random-blob data in ``spec``'s native layout (split folders or class folders)."""
    rng = np.random.default_rng(0)
    for domain in spec.domains:
        if spec.layout == "class_folders":
            folder = root / domain
            folder.mkdir(parents=True)
            for i in range(1, train + test + 1):  # the spec's test_fraction splits them
                image, mask = _sample(spec, rng, size)
                image.save(folder / f"{domain} ({i}).png")
                mask.save(folder / f"{domain} ({i}){spec.mask_suffix}.png")
            continue
        for split, count in (("train", train), ("test", test)):
            images = root / domain / split / spec.image_subdir
            masks = root / domain / split / spec.mask_subdir
            images.mkdir(parents=True)
            masks.mkdir(parents=True)
            for i in range(count):
                image, mask = _sample(spec, rng, size)
                image.save(images / f"{i:04d}.png")
                mask.save(masks / f"{i:04d}.png")
    return root


def bench_config(name: str, root: Path, args: argparse.Namespace) -> Config:
    """The config of bench ``name`` on the data at ``root``, with the command line's settings."""
    path, overrides, _, _ = BENCHES[name]
    overrides = [
        *overrides,
        f"data.root={root}",
        f"data.lb_num={BENCHES[name][2] // 2}",
        f"train.device={args.device}",
        "train.max_iterations=1000000",
        f"train.compile={args.compile}",
        f"train.deterministic={args.deterministic}",
        *args.set,
    ]
    config = load_config(path, overrides)
    # Same architecture and cost; the MedSAM weights only when they are on disk.
    if config.model.foundation == "vit_b_random" and MEDSAM_CHECKPOINT.is_file():
        config.model.foundation, config.model.checkpoint = "medsam_vit_b", str(MEDSAM_CHECKPOINT)
    return config
