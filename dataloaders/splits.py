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
from typing import Any

import numpy as np
import torch

from dataloaders.datasets import (
    CachedSamples,
    DataError,
    SampleFiles,
    SegmentationDataset,
    load_samples,
    scan_split,
)
from dataloaders.h5 import VolumeDataset, load_volumes
from dataloaders.settings import Setting, resolve_setting
from dataloaders.specs import DatasetSpec

logger = logging.getLogger(__name__)

# A per-domain evaluation set: 2-D images, or whole volumes for specs evaluated per volume.
EvalSet = SegmentationDataset | VolumeDataset


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
    # 0-based domains with test (and val) files; the others have empty lists.
    eval_domains: list[int] = field(default_factory=list)


@dataclass
class DataSplits:
    """The data of one experiment (masks of the training sets at canvas size, of tests at patch)."""

    labeled: SegmentationDataset
    unlabeled: SegmentationDataset  # its masks are kept for diagnostics only
    test: dict[str, EvalSet]  # domain folder name -> test set (evaluated domains only)
    labeled_domain: int  # 0-based
    # domain folder name -> validation set held out of the train files; {} = none
    val: dict[str, EvalSet] = field(default_factory=dict)
    train_counts: list[int] = field(default_factory=list)  # per domain, all train files


def _pick(
    spec: DatasetSpec, n: int, lb_num: int | None, labeled_bs: int | None, lb_seed: int | None
) -> list[int]:
    """Indices of the labeled train files of the labeled domain (``n`` files; None = all)."""
    if lb_num is None:
        count, what = n, f"lb_num=null (all {n})"
    else:
        try:
            count = spec.labeled_images(lb_num)
        except ValueError as error:
            raise DataError(str(error)) from None
        what = f"lb_num={lb_num}"
        if spec.labeled_unit == "patients":
            what += f" patients ({count} slices)"
            if lb_seed is not None:
                raise DataError(
                    f"{what}: data.lb_seed is not supported; the first slices of the "
                    "train list are the labeled patients"
                )
    if not 1 <= count <= n:
        raise DataError(f"{what}: expected 1..{n} labeled images (the labeled domain's train size)")
    if labeled_bs is not None and count < labeled_bs:
        raise DataError(
            f"{what} is smaller than labeled_bs={labeled_bs}; expected lb_num >= "
            "labeled_bs (the reference's batch sampler loops forever on such a set)"
        )
    if lb_seed is None:
        return list(range(count))
    return sorted(np.random.default_rng(lb_seed).choice(n, count, replace=False).tolist())


def plan_splits(
    spec: DatasetSpec,
    root: str | Path,
    lb_domain: int | str,
    lb_num: int | None,
    *,
    lb_seed: int | None = None,
    labeled_bs: int | None = None,
    unlabeled_bs: int | None = None,
    val_fraction: float = 0.0,
    setting: str = "midss",
    unlabeled_domains: Sequence[str | int] | None = None,
    eval_domains: Sequence[str | int] | None = None,
) -> SplitFiles:
    """Choose the labeled, unlabeled and test files (cheap: nothing is decoded).

    Args:
        lb_domain: the labeled domain, 1-based number, digit string or domain name.
        lb_num: labeled images (or patients, for a spec whose ``labeled_unit`` is "patients"),
            taken from the labeled domain's train files: the first in sorted (list) order (the
            reference), or a random draw seeded by ``lb_seed``; None = all of them.
        labeled_bs: if given, the labeled set must hold at least this labeled batch size.
        unlabeled_bs: if given, the unlabeled set must hold at least this many images.
        val_fraction: in [0, 1). If > 0, the last ``ceil(val_fraction * n)`` train files of
            each evaluated domain in sorted order (n = the domain's train files), skipping
            labeled ones, become that domain's validation set, for choices that must not see
            the test split. A spec with a "val" list uses that list instead (val_fraction 0).
        setting, unlabeled_domains, eval_domains: see :mod:`dataloaders.settings`.

    The unlabeled set is every other train file of the unlabeled domains (the labeled domain's
    rest only if it is one of them); the labeled files are chosen before the validation files,
    so they do not depend on ``val_fraction``. Domains not evaluated get empty test/val lists.

    Raises:
        DataError: missing root or domain folder, unpaired files, an unknown domain or setting,
            lb_num out of range, a labeled (unlabeled) set smaller than ``labeled_bs``
            (``unlabeled_bs``), an empty unlabeled or test set, a domain without train files,
            ``val_fraction`` out of range.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction}: expected a value in [0, 1)")
    chosen_setting = resolve_setting(
        spec, setting, lb_domain, lb_num, unlabeled_domains, eval_domains
    )
    lb = chosen_setting.labeled_domain
    train = [scan_split(spec, root, d, "train") for d in range(len(spec.domains))]
    test = _scan_test_files(spec, root, chosen_setting.eval_domains)
    picked = _pick(spec, len(train[lb]), lb_num, labeled_bs, lb_seed)
    unlabeled, unlabeled_domains_of, val = _unlabeled_and_val(
        spec, root, train, chosen_setting, set(picked), val_fraction
    )
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
    return SplitFiles(
        labeled,
        unlabeled,
        unlabeled_domains_of,
        test,
        lb,
        train_counts,
        val,
        list(chosen_setting.eval_domains),
    )


def _unlabeled_and_val(
    spec: DatasetSpec,
    root: str | Path,
    train: list[list[SampleFiles]],
    setting: Setting,
    chosen: set[int],
    val_fraction: float,
) -> tuple[list[SampleFiles], list[int], list[list[SampleFiles]]]:
    """The unlabeled files (and their domains) and the per-domain validation files."""
    listed_val = "val" in dict(spec.split_lists)
    if listed_val and val_fraction > 0:
        raise DataError(
            f"val_fraction={val_fraction}: {spec.name} has its own validation list "
            f"({dict(spec.split_lists)['val']}); expected val_fraction 0"
        )
    unlabeled, domains, val = [], [], []
    for d, files in enumerate(train):
        kept = [f for i, f in enumerate(files) if d != setting.labeled_domain or i not in chosen]
        held: list[SampleFiles] = []
        if d in setting.eval_domains and listed_val:
            held = scan_split(spec, root, d, "val")
        elif d in setting.eval_domains:
            # Fewer files than the share asks for (a labeled domain) -> all that are left.
            cut = max(len(kept) - _validation_count(len(files), val_fraction), 0)
            held, kept = kept[cut:], kept[:cut]
        val.append(held)
        if d in setting.unlabeled_domains:
            unlabeled += kept
            domains += [d] * len(kept)
    empty_val = [spec.domains[d] for d in setting.eval_domains if not val[d]]
    if val_fraction > 0 and empty_val:
        raise DataError(
            f"val_fraction={val_fraction}: no train files left for a validation set in "
            f"{', '.join(empty_val)}; lower lb_num or raise val_fraction"
        )
    return unlabeled, domains, val if (val_fraction > 0 or listed_val) else []


def _validation_count(n: int, fraction: float) -> int:
    """Validation files of a domain with ``n`` train files: ceil(fraction * n), 0 if fraction 0."""
    return math.ceil(fraction * n - 1e-9) if fraction > 0 else 0


def build_splits(
    spec: DatasetSpec,
    root: str | Path,
    lb_domain: int | str,
    lb_num: int | None,
    *,
    canvas_size: int,
    patch_size: int,
    progress: bool = False,
    num_workers: int = 4,
    **selection: Any,
) -> DataSplits:
    """Labeled, unlabeled and per-domain test sets, decoded, as the reference builds them.

    Files are chosen by :func:`plan_splits` (same arguments and errors) before anything is
    decoded. Images are cached at ``canvas_size``; masks of the training sets at
    ``canvas_size``, of the test and validation sets at ``patch_size`` (the metric resolution),
    by ``num_workers`` threads; ``progress`` shows a tqdm bar per set. ``selection``: the
    keyword arguments of :func:`plan_splits` (lb_seed, labeled_bs, setting, ...). Volume
    datasets (``spec.eval_unit == "volume"``) give :class:`~dataloaders.h5.VolumeDataset`
    test and validation sets.
    """
    plan = plan_splits(spec, root, lb_domain, lb_num, **selection)

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

    lb, sizes = plan.labeled_domain, (canvas_size, patch_size)
    return DataSplits(
        labeled=load(plan.labeled, [lb] * len(plan.labeled), "labeled"),
        unlabeled=load(plan.unlabeled, plan.unlabeled_domains, "unlabeled"),
        test=_load_eval_sets(spec, plan.test, plan.eval_domains, sizes, progress, num_workers),
        labeled_domain=lb,
        val=(
            _load_eval_sets(spec, plan.val, plan.eval_domains, sizes, progress, num_workers, "val")
            if plan.val
            else {}
        ),
        train_counts=plan.train_counts,
    )


def build_test_sets(
    spec: DatasetSpec,
    root: str | Path,
    *,
    canvas_size: int,
    patch_size: int,
    progress: bool = False,
    num_workers: int = 4,
    domains: Sequence[int] | None = None,
) -> dict[str, EvalSet]:
    """Only the per-domain test sets (what ``test.py`` needs), decoded as :func:`build_splits`
    decodes them: images at ``canvas_size``, masks at ``patch_size`` (volumes: native size), of
    the 0-based ``domains`` (None = all; see :func:`dataloaders.settings.resolve_setting`).

    Raises:
        DataError: a missing folder, an unpaired file, or a domain without test samples.
    """
    domains = list(range(len(spec.domains))) if domains is None else list(domains)
    files = _scan_test_files(spec, root, domains)
    return _load_eval_sets(spec, files, domains, (canvas_size, patch_size), progress, num_workers)


def _scan_test_files(
    spec: DatasetSpec, root: str | Path, domains: Sequence[int] | None = None
) -> list[list[SampleFiles]]:
    """Test files per domain in spec order; [] for a domain not in ``domains`` (None = all)."""
    domains = range(len(spec.domains)) if domains is None else domains
    test = [
        scan_split(spec, root, d, "test") if d in domains else [] for d in range(len(spec.domains))
    ]
    for d in domains:
        if not test[d]:
            raise DataError(f"{Path(root) / spec.domains[d]}: no test samples; expected some")
    return test


def _load_eval_sets(
    spec: DatasetSpec,
    files_per_domain: list[list[SampleFiles]],
    domains: Sequence[int],
    sizes: tuple[int, int],
    progress: bool,
    num_workers: int,
    split: str = "test",
) -> dict[str, EvalSet]:
    """Evaluation sets of ``domains``: images at the canvas size (``sizes[0]``), masks at the
    patch size (``sizes[1]``), or whole volumes for a spec evaluated per volume."""
    canvas_size, patch_size = sizes
    sets: dict[str, EvalSet] = {}
    for d in domains:
        name, files = spec.domains[d], files_per_domain[d]
        if spec.eval_unit == "volume":
            sets[name] = load_volumes(
                spec, files, d, canvas_size=canvas_size, num_workers=num_workers
            )
            continue
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


def _domain_stats(
    part: CachedSamples | EvalSet, d: int, num_classes: int
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Native sizes and per-image (per-slice for volumes) class fractions of domain ``d``."""
    if isinstance(part, VolumeDataset):
        if part.domain != d:
            return [], torch.zeros(0, num_classes + 1)
        fractions = [class_fractions(m, num_classes) for m in part.masks]
        return part.native_sizes, torch.cat(fractions)
    samples = part.samples if isinstance(part, SegmentationDataset) else part
    keep = (samples.domains == d).nonzero().flatten().tolist()
    return [samples.native_sizes[i] for i in keep], class_fractions(
        samples.masks[keep], num_classes
    )


def describe_splits(splits: DataSplits, spec: DatasetSpec) -> str:
    """A per-domain table of counts, native image sizes (W x H) and mean class pixel fractions.

    "train" = all train files of the domain (labeled + unlabeled + val held out of them + any
    the setting leaves unused). Fractions are averaged over the domain's train and test samples
    (each sample, or volume slice, counts once); "empty" counts samples without any foreground
    pixel. Test and val count volumes for a spec evaluated per volume. Warnings follow the table.
    """
    parts = [splits.labeled, splits.unlabeled, *splits.test.values(), *splits.val.values()]
    header = ["domain", "train", "test", "labeled", "unlabeled", "val", "image sizes"]
    header += [f"%{name}" for name in ("background", *spec.class_names)] + ["empty"]
    rows = []
    for d, folder in enumerate(spec.domains):
        title = spec.domain_titles[d]
        labeled = int((splits.labeled.samples.domains == d).sum())
        unlabeled = int((splits.unlabeled.samples.domains == d).sum())
        n_test = len(splits.test[folder]) if folder in splits.test else 0
        n_val = len(splits.val[folder]) if folder in splits.val else 0
        stats = [_domain_stats(part, d, spec.num_classes) for part in parts]
        sizes = [size for part_sizes, _ in stats for size in part_sizes]
        frac = torch.cat([fractions for _, fractions in stats])
        name = folder if title == folder else f"{folder} ({title})"
        n_train = splits.train_counts[d] if splits.train_counts else labeled + unlabeled + n_val
        row = [name, n_train, n_test, labeled, unlabeled, n_val]
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
