"""Which files of an experiment land in which stream: labeled, unlabeled, validation, test.

:func:`plan_splits` chooses the files the way the reference does (by default: the first ``lb_num``
train files of the labeled domain, in sorted order, are labeled; every other train file of every
domain is unlabeled; each domain's test split is its test set) and checks every bad input up
front, before anything is decoded. :mod:`dataloaders.splits` decodes the plan;
:mod:`dataloaders.split_report` describes the decoded sets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataloaders.datasets import DataError, SampleFiles, scan_split
from dataloaders.settings import Setting, resolve_setting
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
    # 0-based domains with test (and val) files; the others have empty lists.
    eval_domains: list[int] = field(default_factory=list)


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
    resolved = resolve_setting(spec, setting, lb_domain, lb_num, unlabeled_domains, eval_domains)
    lb = resolved.labeled_domain
    train = [scan_split(spec, root, d, "train") for d in range(len(spec.domains))]
    test = scan_test_files(spec, root, resolved.eval_domains)
    picked = _pick(spec, len(train[lb]), lb_num, labeled_bs, lb_seed)
    unlabeled, unlabeled_of, val = _unlabeled_and_val(
        spec, root, train, resolved, set(picked), val_fraction
    )
    counts = _checked_train_counts(spec, root, train, len(unlabeled), unlabeled_bs, lb_num)
    labeled = [train[lb][i] for i in picked]
    evaluated = list(resolved.eval_domains)
    return SplitFiles(labeled, unlabeled, unlabeled_of, test, lb, counts, val, evaluated)


def _checked_train_counts(
    spec: DatasetSpec,
    root: str | Path,
    train: list[list[SampleFiles]],
    n_unlabeled: int,
    unlabeled_bs: int | None,
    lb_num: int | None,
) -> list[int]:
    """The number of train files of each domain, after the checks on the train files.

    Raises ``DataError`` when fewer than ``unlabeled_bs`` (at least one) unlabeled files are left
    or a domain has no train files; logs a warning where a count differs from the reference's.
    """
    needed = max(1, unlabeled_bs or 1)
    if n_unlabeled < needed:
        raise DataError(
            f"{root}: {n_unlabeled} unlabeled train samples left after taking lb_num={lb_num};"
            f" expected at least {needed} (the unlabeled batch size)"
        )
    for d, files in enumerate(train):
        if not files:  # a domain that adds no unlabeled image would vanish from training unseen
            raise DataError(f"{Path(root) / spec.domains[d]}: no train samples; expected some")
    train_counts = [len(files) for files in train]
    for warning in count_warnings(spec, train_counts):
        logger.warning(warning)
    return train_counts


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


def scan_test_files(
    spec: DatasetSpec, root: str | Path, domains: Sequence[int] | None = None
) -> list[list[SampleFiles]]:
    """Test files per domain in spec order; [] for a domain not in ``domains`` (None = all).

    Raises:
        DataError: a missing folder, an unpaired file, or an evaluated domain without test files.
    """
    domains = range(len(spec.domains)) if domains is None else domains
    test = [
        scan_split(spec, root, d, "test") if d in domains else [] for d in range(len(spec.domains))
    ]
    for d in domains:
        if not test[d]:
            raise DataError(f"{Path(root) / spec.domains[d]}: no test samples; expected some")
    return test


def count_warnings(spec: DatasetSpec, train_counts: Sequence[int]) -> list[str]:
    """Messages for train counts that differ from the reference's hard-coded ``domain_len``."""
    return [
        f"{spec.domains[d]}: {n} train samples, the reference's domain_len says {expected}"
        for d, (n, expected) in enumerate(zip(train_counts, spec.reference_train_counts))
        if n != expected
    ]
