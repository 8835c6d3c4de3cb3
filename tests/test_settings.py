"""Setting presets (dataloaders.settings) on the real samples: which files land in which stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataloaders.datasets import DataError
from dataloaders.settings import resolve_setting
from dataloaders.specs import BUSI, FUNDUS
from dataloaders.split_plan import SplitFiles, plan_splits


def _streams(plan: SplitFiles) -> tuple[set[Path], set[Path], set[Path]]:
    labeled = {f.image for f in plan.labeled}
    unlabeled = {f.image for f in plan.unlabeled}
    test = {f.image for files in plan.test for f in files}
    assert not labeled & unlabeled and not labeled & test and not unlabeled & test
    return labeled, unlabeled, test


def _domains(files) -> set[str]:
    return {f.name.split("/")[0] for f in files}


def test_midss_is_todays_default(samples_root: Path) -> None:
    root = samples_root / "Fundus"
    plan = plan_splits(FUNDUS, root, 2, 1)
    assert plan == plan_splits(FUNDUS, root, 2, 1, setting="midss")
    labeled, unlabeled, test = _streams(plan)
    assert _domains(plan.labeled) == {"Domain2"}
    assert _domains(plan.unlabeled) == {"Domain1", "Domain3", "Domain4"}  # Domain2 has 1 file
    assert plan.eval_domains == [0, 1, 2, 3] and len(test) == 4


def test_uda_labels_the_whole_source_and_tests_the_targets(samples_root: Path) -> None:
    root = samples_root / "Fundus"
    plan = plan_splits(FUNDUS, root, "Domain2", None, setting="uda")
    labeled, unlabeled, test = _streams(plan)
    source = root / "Domain2" / "train" / "ROIs" / "image"
    assert labeled == set(source.glob("*.png"))
    assert _domains(plan.unlabeled) == {"Domain1", "Domain3", "Domain4"}
    assert plan.unlabeled_domains == [0, 2, 3] and plan.eval_domains == [0, 2, 3]
    assert plan.test[1] == [] and _domains(f for files in plan.test for f in files) == {
        "Domain1",
        "Domain3",
        "Domain4",
    }
    with pytest.raises(DataError, match="uda labels every train image.*lb_num=null"):
        plan_splits(FUNDUS, root, 2, 1, setting="uda")


def test_le_uda_uses_a_source_subset_and_leaves_its_rest_out(busi_root: Path) -> None:
    plan = plan_splits(BUSI, busi_root, "benign", 64, setting="le-uda")
    labeled, unlabeled, test = _streams(plan)
    assert len(labeled) == 64 and _domains(plan.labeled) == {"benign"}
    assert _domains(plan.unlabeled) == {"malignant"} and len(unlabeled) == 168
    assert _domains(f for files in plan.test for f in files) == {"malignant"} and len(test) == 42
    assert plan.train_counts == [350, 168]  # 286 benign train images are in no stream


def test_ssmis_stays_in_one_domain(busi_root: Path) -> None:
    plan = plan_splits(BUSI, busi_root, "malignant", 21, setting="ssmis", val_fraction=0.1)
    labeled, unlabeled, test = _streams(plan)
    val = {f.image for files in plan.val for f in files}
    assert _domains(plan.labeled) == _domains(plan.unlabeled) == {"malignant"}
    assert len(labeled) + len(unlabeled) + len(val) == 168 and len(val) == 17
    assert not val & (labeled | unlabeled | test)
    assert plan.eval_domains == [1] and plan.val[0] == [] and len(test) == 42


def test_explicit_domains_override_the_preset(samples_root: Path) -> None:
    root = samples_root / "Fundus"
    plan = plan_splits(
        FUNDUS, root, 1, 1, setting="le-uda", unlabeled_domains=["3"], eval_domains=["Domain4", 1]
    )
    _streams(plan)
    assert _domains(plan.unlabeled) == {"Domain3"} and plan.eval_domains == [0, 3]


def test_bad_settings_are_named() -> None:
    with pytest.raises(DataError, match="data.setting: unknown 'semi'; expected one of midss"):
        resolve_setting(FUNDUS, "semi", 1, 5)
    with pytest.raises(DataError, match="data.eval_domains: fundus: unknown domain 'Domain9'"):
        resolve_setting(FUNDUS, "midss", 1, 5, eval_domains=["Domain9"])
    from dataloaders.specs import ACDC

    with pytest.raises(DataError, match="le-uda: acdc has one domain"):
        resolve_setting(ACDC, "le-uda", 1, 3)
