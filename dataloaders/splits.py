"""The decoded labeled / unlabeled / validation / per-domain test sets of one experiment.

:func:`build_splits` decodes the files that :func:`dataloaders.split_plan.plan_splits` chooses
with :func:`dataloaders.datasets.load_samples` (volumes with
:func:`dataloaders.h5.load_volumes`); :func:`build_test_sets` decodes only the test sets.
:func:`dataloaders.split_report.describe_splits` prints the table of ``python -m dataloaders``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataloaders.datasets import SampleFiles, SegmentationDataset, load_samples
from dataloaders.h5 import VolumeDataset, load_volumes
from dataloaders.specs import DatasetSpec
from dataloaders.split_plan import plan_splits, scan_test_files

# A per-domain evaluation set: 2-D images, or whole volumes for specs evaluated per volume.
EvalSet = SegmentationDataset | VolumeDataset


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
    files = scan_test_files(spec, root, domains)
    return _load_eval_sets(spec, files, domains, (canvas_size, patch_size), progress, num_workers)


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
