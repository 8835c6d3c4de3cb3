"""The per-domain table of ``python -m dataloaders``: counts, image sizes, class fractions.

:func:`describe_splits` reports the decoded sets of :func:`dataloaders.splits.build_splits`,
followed by the warnings of :func:`dataloaders.split_plan.count_warnings`.
"""

from __future__ import annotations

import torch

from dataloaders.datasets import CachedSamples, SegmentationDataset
from dataloaders.h5 import VolumeDataset
from dataloaders.specs import DatasetSpec
from dataloaders.split_plan import count_warnings
from dataloaders.splits import DataSplits, EvalSet


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
