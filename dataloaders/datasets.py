"""Multi-domain segmentation data over any :class:`~dataloaders.specs.DatasetSpec`.

Files are found once (:func:`scan_split`), decoded once into uint8 tensors held in memory
(:func:`load_samples`) and served by a dataset whose ``__getitem__`` only indexes tensors; all
augmentation happens later, on the training device, in batches. Which files make up the labeled,
unlabeled, validation and test sets of an experiment is decided in :mod:`dataloaders.split_plan`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dataloaders.specs import DatasetSpec

_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}


class DataError(ValueError):
    """Bad or missing data; the message names the file or key and what was expected."""


@dataclass
class SampleFiles:
    """One sample on disk: an image and the mask file(s) that label it (merged by max)."""

    name: str  # "<domain folder>/<image stem>", e.g. "BIDMC/00_00" or "benign/benign (1)"
    image: Path
    masks: tuple[Path, ...]


# --------------------------------------------------------------------------------------------
# Finding files


def _pngs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; expected a folder of *.png files")
    # The reference sorts full path strings (byte order, not numeric): G-1-L < G-10-L < G-2-R.
    return sorted(folder.glob("*.png"), key=str)


def _scan_split_folders(spec: DatasetSpec, domain_dir: Path, split: str) -> list[SampleFiles]:
    image_dir = domain_dir / split / spec.image_subdir
    mask_dir = domain_dir / split / spec.mask_subdir
    images, masks = _pngs(image_dir), _pngs(mask_dir)
    mask_names = {p.name for p in masks}
    for path in images:
        if path.name not in mask_names:
            raise DataError(f"{path}: image has no mask; expected {mask_dir / path.name}")
    image_names = {p.name for p in images}
    for path in masks:
        if path.name not in image_names:
            raise DataError(f"{path}: mask has no image; expected {image_dir / path.name}")
    return [SampleFiles(f"{domain_dir.name}/{p.stem}", p, (mask_dir / p.name,)) for p in images]


def _scan_class_folder(spec: DatasetSpec, domain_dir: Path) -> list[SampleFiles]:
    files = _pngs(domain_dir)
    suffix = spec.mask_suffix
    pattern = re.compile(rf"(?P<stem>.*){re.escape(suffix)}(?:_(?P<k>\d+))?")
    images = [p for p in files if suffix not in p.stem]
    masks: dict[str, list[tuple[int, Path]]] = {p.stem: [] for p in images}
    for path in files:
        if suffix not in path.stem:
            continue
        match = pattern.fullmatch(path.stem)
        if match is None:
            raise DataError(f"{path}: unexpected mask name; expected <image>{suffix}[_<k>].png")
        if match["stem"] not in masks:
            raise DataError(f"{path}: mask has no image; expected {match['stem']}.png beside it")
        masks[match["stem"]].append((int(match["k"] or 0), path))
    samples = []
    for path in images:
        if not masks[path.stem]:
            raise DataError(f"{path}: image has no mask; expected {path.stem}{suffix}.png")
        found = tuple(p for _, p in sorted(masks[path.stem]))
        samples.append(SampleFiles(f"{domain_dir.name}/{path.stem}", path, found))
    return samples


def scan_split(spec: DatasetSpec, root: str | Path, domain: int, split: str) -> list[SampleFiles]:
    """The samples of one domain's train or test split, in the reference's sorted order.

    Args:
        spec: the dataset.
        root: folder holding the dataset's native layout (``docs/DATA.md``).
        domain: 0-based index into ``spec.domains``.
        split: "train" or "test" (or "val" for the "h5_slices" layout, whose splits are list
            files: see :mod:`dataloaders.h5`). For the "class_folders" layout the split is
            computed: the last ``int(test_fraction * n)`` samples are the test set (none if that
            is 0).

    Raises:
        DataError: a missing folder, an image without a mask or a mask without an image.
    """
    if spec.layout == "h5_slices":
        from dataloaders.h5 import scan_h5_split  # h5 builds on this module

        return scan_h5_split(spec, root, split)
    if split not in ("train", "test"):
        raise DataError(f"split {split!r}: expected 'train' or 'test'")
    if not 0 <= domain < len(spec.domains):
        raise DataError(f"{spec.name}: domain index {domain}; expected 0..{len(spec.domains) - 1}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found; expected the {spec.name} folder")
    domain_dir = root / spec.domains[domain]
    if not domain_dir.is_dir():
        expected = ", ".join(spec.domains)
        raise DataError(f"{domain_dir}: domain folder not found; expected folders {expected}")
    if spec.layout == "split_folders":
        return _scan_split_folders(spec, domain_dir, split)
    samples = _scan_class_folder(spec, domain_dir)
    n_test = int(spec.test_fraction * len(samples))
    # Slice by the train size: the reference's samples[-n_test:] takes everything when n_test == 0.
    n_train = len(samples) - n_test
    return samples[:n_train] if split == "train" else samples[n_train:]


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass
class CachedSamples:
    """Decoded samples kept in memory.

    images: (N, C, S, S) uint8, C = spec.in_channels, S = the canvas size.
    masks: (N, M, M) uint8 class indices in 0..spec.num_classes.
    domains: (N,) int64 0-based domain indices.
    names: N sample names; native_sizes: N native image sizes (width, height).
    """

    images: torch.Tensor
    masks: torch.Tensor
    domains: torch.Tensor
    names: list[str]
    native_sizes: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot read image ({error}); expected a valid PNG") from None


def _code(raw: int | tuple[int, int, int]) -> int:
    """A raw gray level, or an (R, G, B) colour packed into one int."""
    return (raw[0] << 16) | (raw[1] << 8) | raw[2] if isinstance(raw, tuple) else raw


def decode_mask(spec: DatasetSpec, path: Path) -> np.ndarray:
    """Class indices (H, W) uint8 of one mask file, through ``spec.mask_encoding``.

    Raises:
        DataError: naming the file and the raw values that are not in the encoding.
    """
    raw = np.asarray(_open(path, spec.mask_mode)).astype(np.int64)
    if raw.ndim == 3:
        raw = (raw[..., 0] << 16) | (raw[..., 1] << 8) | raw[..., 2]
    return check_mask_values(spec, raw, path)


def check_mask_values(spec: DatasetSpec, raw: np.ndarray, path: Path) -> np.ndarray:
    """Class indices (uint8, ``raw``'s shape) of raw mask values (gray levels or packed RGB
    codes) through ``spec.mask_encoding``.

    Raises:
        DataError: naming ``path`` and the raw values that are not in the encoding.
    """
    raw = raw.astype(np.int64)
    pairs = sorted((_code(value), index) for value, index in spec.mask_encoding)
    codes = np.array([code for code, _ in pairs])
    classes = np.array([index for _, index in pairs], dtype=np.uint8)
    pos = np.searchsorted(codes, raw).clip(0, len(codes) - 1)
    valid = codes[pos] == raw
    if not valid.all():
        bad = np.unique(raw[~valid])[:5].tolist()
        if spec.mask_mode == "RGB":
            bad = [(v >> 16, (v >> 8) & 255, v & 255) for v in bad]
        expected = [value for value, _ in spec.mask_encoding]
        raise DataError(f"{path}: unexpected mask values {bad}; expected only {expected}")
    return classes[pos]


def _decode(
    spec: DatasetSpec, sample: SampleFiles, canvas_size: int, mask_size: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    image = _open(sample.image, "L" if spec.in_channels == 1 else "RGB")
    native = image.size
    # Non-square images are stretched onto the square canvas, as the reference does.
    image = image.resize((canvas_size, canvas_size), _RESAMPLE[spec.image_resample])
    pixels = np.array(image).reshape(canvas_size, canvas_size, -1).transpose(2, 0, 1)
    mask = None
    for path in sample.masks:
        classes = decode_mask(spec, path)
        if classes.shape[::-1] != native:
            raise DataError(
                f"{path}: mask size {classes.shape[1]}x{classes.shape[0]} differs from its "
                f"image {sample.image.name} ({native[0]}x{native[1]}); expected the same size"
            )
        mask = classes if mask is None else np.maximum(mask, classes)
    # Resized from the native mask (not via the canvas), so test masks match the reference's.
    mask_image = Image.fromarray(mask).resize((mask_size, mask_size), Image.Resampling.NEAREST)
    return pixels, np.array(mask_image), native


def load_samples(
    spec: DatasetSpec,
    files: Sequence[SampleFiles],
    domains: Sequence[int],
    *,
    canvas_size: int,
    mask_size: int | None = None,
    num_workers: int = 4,
    progress: bool = False,
    desc: str = "decode",
) -> CachedSamples:
    """Decode ``files`` once into uint8 tensors (see :class:`CachedSamples` for shapes).

    Images are converted to L or RGB and resized to ``canvas_size`` with the spec's resampling;
    masks are decoded to class indices, merged by max, and resized NEAREST from their native
    size to ``mask_size`` (default ``canvas_size``). Decoding runs in a thread pool.

    Raises:
        DataError: an unreadable image, an unexpected mask value or a mask of another size.
    """
    if len(files) != len(domains):
        raise DataError(f"{len(files)} files but {len(domains)} domain indices; expected equal")
    mask_size = mask_size or canvas_size
    n = len(files)
    images = torch.empty(n, spec.in_channels, canvas_size, canvas_size, dtype=torch.uint8)
    masks = torch.empty(n, mask_size, mask_size, dtype=torch.uint8)
    sizes: list[tuple[int, int]] = []
    decode = _decode
    if spec.layout == "h5_slices":
        from dataloaders.h5 import decode_h5_slice as decode
    pool = ThreadPoolExecutor(max(1, num_workers))
    try:
        decoded = pool.map(lambda s: decode(spec, s, canvas_size, mask_size), files)
        if progress:
            from tqdm import tqdm

            decoded = tqdm(decoded, total=n, desc=desc, unit="img", leave=False)
        for i, (pixels, mask, native) in enumerate(decoded):
            images[i] = torch.from_numpy(pixels)
            masks[i] = torch.from_numpy(mask)
            sizes.append(native)
    finally:
        # On an error, report it now instead of after decoding every queued file.
        pool.shutdown(wait=True, cancel_futures=True)
    domain_tensor = torch.as_tensor(list(domains), dtype=torch.int64).reshape(n)
    return CachedSamples(images, masks, domain_tensor, [f.name for f in files], sizes)


class SegmentationDataset(torch.utils.data.Dataset):
    """A map-style dataset over :class:`CachedSamples`; ``__getitem__`` only indexes tensors.

    Items: ``image`` (C, S, S) uint8, ``mask`` (M, M) uint8 class indices, ``domain`` int64
    scalar tensor (0-based), ``index`` int.
    """

    def __init__(self, samples: CachedSamples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples
        return {"image": s.images[i], "mask": s.masks[i], "domain": s.domains[i], "index": i}
