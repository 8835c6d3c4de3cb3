"""Multi-domain segmentation data over any :class:`~dataloaders.specs.DatasetSpec`.

Files are found once (:func:`scan_split`), decoded once into uint8 tensors held in memory
(:func:`load_samples`) and served by a dataset whose ``__getitem__`` only indexes tensors; all
augmentation happens later, on the training device, in batches. :func:`build_splits` makes the
labeled / unlabeled / per-domain test sets of one experiment the way the reference does
(``reference/SPEC.md`` section 1.3) and checks every bad input up front, before any decoding.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dataloaders.specs import DatasetSpec

logger = logging.getLogger(__name__)

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
        split: "train" or "test". For the "class_folders" layout the split is computed: the
            last ``int(test_fraction * n)`` samples are the test set (none if that is 0).

    Raises:
        DataError: a missing folder, an image without a mask or a mask without an image.
    """
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
    pool = ThreadPoolExecutor(max(1, num_workers))
    try:
        decoded = pool.map(lambda s: _decode(spec, s, canvas_size, mask_size), files)
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


# --------------------------------------------------------------------------------------------
# Experiment splits


@dataclass
class SplitFiles:
    """The files of one experiment, before decoding (see :func:`plan_splits`)."""

    labeled: list[SampleFiles]
    unlabeled: list[SampleFiles]
    unlabeled_domains: list[int]  # 0-based domain of each unlabeled file
    test: list[list[SampleFiles]]  # per domain, in spec.domains order
    labeled_domain: int  # 0-based
    train_counts: list[int]  # per domain
    val: list[list[SampleFiles]] = field(default_factory=list)  # per domain; [] = no val split


@dataclass
class DataSplits:
    """The data of one experiment (masks of the training sets at canvas size, of tests at patch)."""

    labeled: SegmentationDataset
    unlabeled: SegmentationDataset  # its masks are kept for diagnostics only
    test: dict[str, SegmentationDataset]  # domain folder name -> test set
    labeled_domain: int  # 0-based
    # domain folder name -> validation set held out of the train files; {} = none
    val: dict[str, SegmentationDataset] = field(default_factory=dict)


def _pick(n: int, lb_num: int, labeled_bs: int | None, lb_seed: int | None) -> list[int]:
    if not 1 <= lb_num <= n:
        raise DataError(f"lb_num={lb_num}: expected 1..{n} (the labeled domain's train size)")
    if labeled_bs is not None and lb_num < labeled_bs:
        raise DataError(
            f"lb_num={lb_num} is smaller than labeled_bs={labeled_bs}; expected lb_num >= "
            "labeled_bs (the reference's batch sampler loops forever on such a set)"
        )
    if lb_seed is None:
        return list(range(lb_num))
    return sorted(np.random.default_rng(lb_seed).choice(n, lb_num, replace=False).tolist())


def plan_splits(
    spec: DatasetSpec,
    root: str | Path,
    lb_domain: int | str,
    lb_num: int,
    *,
    lb_seed: int | None = None,
    labeled_bs: int | None = None,
    unlabeled_bs: int | None = None,
    val_fraction: float = 0.0,
) -> SplitFiles:
    """Choose the labeled, unlabeled and test files (cheap: nothing is decoded).

    Args:
        lb_domain: the labeled domain, 1-based number, digit string or domain name.
        lb_num: labeled images, taken from the labeled domain's train files: the first
            ``lb_num`` in sorted order (the reference), or a random draw seeded by ``lb_seed``.
        labeled_bs: if given, ``lb_num`` must be at least this labeled batch size.
        unlabeled_bs: if given, the unlabeled set must hold at least this many images.
        val_fraction: in [0, 1). If > 0, the last ``ceil(val_fraction * n)`` train files of
            each domain in sorted order (n = the domain's train files), skipping labeled ones,
            become that domain's validation set, for choices that must not see the test split.

    The unlabeled set is every other train file of every domain (labeled domain included); the
    labeled files are chosen before the validation files, so they do not depend on
    ``val_fraction``.

    Raises:
        DataError: missing root or domain folder, unpaired files, an unknown domain, lb_num out
            of range, a labeled (unlabeled) set smaller than ``labeled_bs`` (``unlabeled_bs``),
            an empty unlabeled or test set, ``val_fraction`` out of range.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction}: expected a value in [0, 1)")
    try:
        lb = spec.domain_index(lb_domain)
    except ValueError as error:
        raise DataError(str(error)) from None
    train = [scan_split(spec, root, d, "train") for d in range(len(spec.domains))]
    test = _scan_test_files(spec, root)
    picked = _pick(len(train[lb]), lb_num, labeled_bs, lb_seed)
    chosen = set(picked)
    unlabeled, unlabeled_domains, val = [], [], []
    for d, files in enumerate(train):
        kept = [f for i, f in enumerate(files) if d != lb or i not in chosen]
        # Fewer files than the share asks for (a labeled domain) -> all that are left.
        cut = max(len(kept) - _validation_count(len(files), val_fraction), 0)
        val.append(kept[cut:])
        kept = kept[:cut]
        unlabeled += kept
        unlabeled_domains += [d] * len(kept)
    if len(unlabeled) < max(1, unlabeled_bs or 1):
        raise DataError(
            f"{root}: {len(unlabeled)} unlabeled train samples left after taking lb_num={lb_num};"
            f" expected at least {max(1, unlabeled_bs or 1)} (the unlabeled batch size)"
        )
    train_counts = [len(files) for files in train]
    for warning in count_warnings(spec, train_counts):
        logger.warning(warning)
    labeled = [train[lb][i] for i in picked]
    empty_val = [spec.domains[d] for d, files in enumerate(val) if not files]
    if val_fraction > 0 and empty_val:
        raise DataError(
            f"val_fraction={val_fraction}: no train files left for a validation set in "
            f"{', '.join(empty_val)}; lower lb_num or raise val_fraction"
        )
    val = val if val_fraction > 0 else []
    return SplitFiles(labeled, unlabeled, unlabeled_domains, test, lb, train_counts, val)


def _validation_count(n: int, fraction: float) -> int:
    """Validation files of a domain with ``n`` train files: ceil(fraction * n), 0 if fraction 0."""
    return math.ceil(fraction * n - 1e-9) if fraction > 0 else 0


def build_splits(
    spec: DatasetSpec,
    root: str | Path,
    lb_domain: int | str,
    lb_num: int,
    *,
    canvas_size: int,
    patch_size: int,
    lb_seed: int | None = None,
    labeled_bs: int | None = None,
    unlabeled_bs: int | None = None,
    val_fraction: float = 0.0,
    progress: bool = False,
    num_workers: int = 4,
) -> DataSplits:
    """Labeled, unlabeled and per-domain test sets, decoded, as the reference builds them.

    Files are chosen by :func:`plan_splits` (same arguments and errors) before anything is
    decoded. Images are cached at ``canvas_size``; masks of the training sets at
    ``canvas_size``, of the test and validation sets at ``patch_size`` (the metric resolution),
    by ``num_workers`` threads; ``progress`` shows a tqdm bar per set.
    """
    plan = plan_splits(
        spec,
        root,
        lb_domain,
        lb_num,
        lb_seed=lb_seed,
        labeled_bs=labeled_bs,
        unlabeled_bs=unlabeled_bs,
        val_fraction=val_fraction,
    )

    def load(files: list[SampleFiles], domains: list[int], desc: str) -> SegmentationDataset:
        cached = load_samples(
            spec,
            files,
            domains,
            canvas_size=canvas_size,
            num_workers=num_workers,
            progress=progress,
            desc=desc,
        )
        return SegmentationDataset(cached)

    lb = plan.labeled_domain
    return DataSplits(
        labeled=load(plan.labeled, [lb] * len(plan.labeled), "labeled"),
        unlabeled=load(plan.unlabeled, plan.unlabeled_domains, "unlabeled"),
        test=_load_eval_sets(spec, plan.test, canvas_size, patch_size, progress, num_workers),
        labeled_domain=lb,
        val=(
            _load_eval_sets(
                spec, plan.val, canvas_size, patch_size, progress, num_workers, split="val"
            )
            if plan.val
            else {}
        ),
    )


def build_test_sets(
    spec: DatasetSpec,
    root: str | Path,
    *,
    canvas_size: int,
    patch_size: int,
    progress: bool = False,
    num_workers: int = 4,
) -> dict[str, SegmentationDataset]:
    """Only the per-domain test sets (what ``test.py`` needs), decoded as :func:`build_splits`
    decodes them: images at ``canvas_size``, masks at ``patch_size``.

    Raises:
        DataError: a missing folder, an unpaired file, or a domain without test samples.
    """
    files = _scan_test_files(spec, root)
    return _load_eval_sets(spec, files, canvas_size, patch_size, progress, num_workers)


def _scan_test_files(spec: DatasetSpec, root: str | Path) -> list[list[SampleFiles]]:
    test = [scan_split(spec, root, d, "test") for d in range(len(spec.domains))]
    for d, files in enumerate(test):
        if not files:
            raise DataError(f"{Path(root) / spec.domains[d]}: no test samples; expected some")
    return test


def _load_eval_sets(
    spec: DatasetSpec,
    files_per_domain: list[list[SampleFiles]],
    canvas_size: int,
    patch_size: int,
    progress: bool,
    num_workers: int,
    split: str = "test",
) -> dict[str, SegmentationDataset]:
    """Per-domain evaluation sets: images at ``canvas_size``, masks at ``patch_size``."""
    sets = {}
    for d, (name, files) in enumerate(zip(spec.domains, files_per_domain)):
        cached = load_samples(
            spec,
            files,
            [d] * len(files),
            canvas_size=canvas_size,
            mask_size=patch_size,
            num_workers=num_workers,
            progress=progress,
            desc=f"{split} {name}",
        )
        sets[name] = SegmentationDataset(cached)
    return sets


def count_warnings(spec: DatasetSpec, train_counts: Sequence[int]) -> list[str]:
    """Messages for train counts that differ from the reference's hard-coded ``domain_len``."""
    return [
        f"{spec.domains[d]}: {n} train samples, the reference's domain_len says {expected}"
        for d, (n, expected) in enumerate(zip(train_counts, spec.reference_train_counts))
        if n != expected
    ]


# --------------------------------------------------------------------------------------------
# Reporting


def class_fractions(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample pixel fraction of each class: (N, M, M) uint8 -> (N, num_classes + 1) float."""
    if len(masks) == 0:
        return torch.zeros(0, num_classes + 1)
    counts = [torch.bincount(m.flatten().long(), minlength=num_classes + 1) for m in masks]
    return torch.stack(counts).float() / masks[0].numel()


def _sizes_text(sizes: list[tuple[int, int]]) -> str:
    distinct = sorted(set(sizes))
    if len(distinct) <= 2:
        return ", ".join(f"{w}x{h}" for w, h in distinct)
    ws, hs = [w for w, _ in distinct], [h for _, h in distinct]
    return f"W {min(ws)}-{max(ws)}, H {min(hs)}-{max(hs)} ({len(distinct)} sizes)"


def describe_splits(splits: DataSplits, spec: DatasetSpec) -> str:
    """A per-domain table of counts, native image sizes (W x H) and mean class pixel fractions.

    "train" = labeled + unlabeled + val (the validation files held out of the train files).
    Fractions are averaged over the domain's train and test samples (each sample counts once);
    "empty" counts samples without any foreground pixel. Warnings follow the table.
    """
    parts = [splits.labeled.samples, splits.unlabeled.samples]
    parts += [d.samples for d in (*splits.test.values(), *splits.val.values())]
    header = ["domain", "train", "test", "labeled", "unlabeled", "val", "image sizes"]
    header += [f"%{name}" for name in ("background", *spec.class_names)] + ["empty"]
    rows = []
    for d, folder in enumerate(spec.domains):
        title = spec.domain_titles[d]
        labeled = int((splits.labeled.samples.domains == d).sum())
        unlabeled = int((splits.unlabeled.samples.domains == d).sum())
        n_test = len(splits.test[folder])
        n_val = len(splits.val[folder]) if splits.val else 0
        sizes, fractions = [], []
        for part in parts:
            keep = (part.domains == d).nonzero().flatten().tolist()
            sizes += [part.native_sizes[i] for i in keep]
            fractions.append(class_fractions(part.masks[keep], spec.num_classes))
        frac = torch.cat(fractions)
        name = folder if title == folder else f"{folder} ({title})"
        row = [name, labeled + unlabeled + n_val, n_test, labeled, unlabeled, n_val]
        row.append(_sizes_text(sizes))
        row += [f"{100 * v:.2f}" for v in frac.mean(0).tolist()]
        rows.append([*map(str, row), str(int((frac[:, 1:].sum(1) == 0).sum()))])
    total = [sum(int(r[i]) for r in rows) for i in range(1, 6)]
    rows.append(["total", *map(str, total), "", *[""] * (spec.num_classes + 1), ""])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    train_counts = [int(r[1]) for r in rows[:-1]]
    lines += [f"warning: {w}" for w in count_warnings(spec, train_counts)]
    return "\n".join(lines)
