"""The labeled / unlabeled / validation / per-domain test sets of one experiment.

:func:`plan_splits` chooses the files the way the reference does (by default: the first ``lb_num``
train files of the labeled domain, in sorted order, are labeled; every other train file of every
domain is unlabeled; each domain's test split is its test set) and checks every bad input up
front, before anything is decoded; :func:`build_splits` decodes them with
:func:`dataloaders.datasets.load_samples`; :func:`describe_splits` prints the table of
``python -m dataloaders``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dataloaders.datasets import (
    DataError,
    SampleFiles,
    SegmentationDataset,
    load_samples,
    scan_split,
)
from dataloaders.specs import DatasetSpec

logger = logging.getLogger(__name__)


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
            an empty unlabeled or test set, a domain without train files, ``val_fraction`` out
            of range.
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
    for d, files in enumerate(train):
        if not files:  # a domain that adds no unlabeled image would vanish from training unseen
            raise DataError(f"{Path(root) / spec.domains[d]}: no train samples; expected some")
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
