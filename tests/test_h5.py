"""The SSL4MIS h5 layout (dataloaders.h5) on the real ACDC sample, and its bad-input errors."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dataloaders.datasets import DataError, load_samples, scan_split
from dataloaders.h5 import VolumeDataset, read_h5
from dataloaders.specs import ACDC
from dataloaders.split_plan import plan_splits
from dataloaders.splits import build_splits


def _patient(name: str) -> str:
    return re.match(r"ACDC/(patient\d+)_", name)[1]


def test_three_patients_are_the_first_68_slices_of_the_list(acdc_root: Path) -> None:
    plan = plan_splits(ACDC, acdc_root, 1, 3, labeled_bs=4, unlabeled_bs=4)
    listed = (acdc_root / "train_slices.list").read_text().split()
    assert [f.name for f in plan.labeled] == [f"ACDC/{c}" for c in listed[:68]]
    assert {_patient(f.name) for f in plan.labeled} == {"patient099", "patient038", "patient050"}
    assert [f.name for f in plan.unlabeled] == [f"ACDC/{c}" for c in listed[68:]]
    assert not {_patient(f.name) for f in plan.unlabeled} & {_patient(f.name) for f in plan.labeled}
    assert [f.name for f in plan.val[0]] == [
        f"ACDC/{c}" for c in ("patient028_frame01", "patient028_frame02")
    ]
    test = [f.name for f in plan.test[0]]
    assert test == ["ACDC/patient011_frame01", "ACDC/patient011_frame02", "ACDC/patient013_frame01"]


def test_patient_counts_outside_the_table_or_the_sample_are_refused(acdc_root: Path) -> None:
    with pytest.raises(DataError, match=r"lb_num=5 patients; expected one of \[3, 7, 14"):
        plan_splits(ACDC, acdc_root, 1, 5)
    with pytest.raises(DataError, match=r"lb_num=7 patients \(136 slices\): expected 1\.\.102"):
        plan_splits(ACDC, acdc_root, 1, 7)
    with pytest.raises(DataError, match="lb_seed is not supported"):
        plan_splits(ACDC, acdc_root, 1, 3, lb_seed=1)
    with pytest.raises(DataError, match="has its own validation list"):
        plan_splits(ACDC, acdc_root, 1, 3, val_fraction=0.1)


def test_slices_decode_to_the_canvas_and_volumes_stay_native(acdc_root: Path) -> None:
    splits = build_splits(ACDC, acdc_root, 1, 3, canvas_size=64, patch_size=64, num_workers=2)
    labeled = splits.labeled.samples
    assert labeled.images.shape == (68, 1, 64, 64) and labeled.images.dtype == torch.uint8
    assert labeled.masks.shape == (68, 64, 64) and set(labeled.masks.unique().tolist()) == {
        0,
        1,
        2,
        3,
    }
    assert (154, 224) in labeled.native_sizes and (276, 384) in labeled.native_sizes
    test = splits.test["ACDC"]
    assert isinstance(test, VolumeDataset) and len(test) == 3 and test.slice_count == 28
    item = test[0]
    with h5py.File(acdc_root / "data" / "patient011_frame01.h5") as f:
        label, image = f["label"][()], f["image"][()]
    assert torch.equal(item["mask"], torch.from_numpy(label))  # native labels, unchanged
    assert item["image"].shape == (9, 1, 64, 64)
    # Quantised canvas images keep the intensity scale of the float volume.
    assert abs(item["image"].float().mean().item() / 255 - image.mean()) < 0.01
    assert len(splits.val["ACDC"]) == 2


def _linked_copy(acdc_root: Path, tmp_path: Path, slices_subdir: bool) -> Path:
    """The sample as symlinks; slice files under data/slices when ``slices_subdir``."""
    root = tmp_path / "acdc"
    (root / "data" / "slices").mkdir(parents=True)
    for path in acdc_root.glob("*.list"):
        (root / path.name).symlink_to(path)
    for path in (acdc_root / "data").glob("*.h5"):
        folder = root / "data" / ("slices" if slices_subdir and "_slice_" in path.name else "")
        (folder / path.name).symlink_to(path)
    return root


def test_slices_in_data_slices_are_found(acdc_root: Path, tmp_path: Path) -> None:
    root = _linked_copy(acdc_root, tmp_path, slices_subdir=True)
    files = scan_split(ACDC, root, 0, "train")
    assert len(files) == 102 and all(f.image.parent.name == "slices" for f in files)
    assert scan_split(ACDC, root, 0, "test")[0].image.parent.name == "data"


def _write(path: Path, **datasets: np.ndarray) -> None:
    path.unlink()  # a symlink to the real file: replace the link, never the file
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value


def test_bad_h5_input_names_the_file(acdc_root: Path, tmp_path: Path) -> None:
    root = _linked_copy(acdc_root, tmp_path, slices_subdir=False)
    first = root / "data" / "patient099_frame01_slice_15.h5"
    sample = scan_split(ACDC, root, 0, "train")[:1]
    image = np.zeros((4, 5), np.float32)
    _write(first, image=image)
    with pytest.raises(DataError, match=rf"{first}: no 'label' dataset; expected datasets"):
        load_samples(ACDC, sample, [0], canvas_size=8)
    _write(first, image=image, label=np.full((4, 5), 5, np.uint8))
    with pytest.raises(DataError, match=rf"{first}: unexpected mask values \[5\]"):
        load_samples(ACDC, sample, [0], canvas_size=8)
    _write(first, image=image + 2, label=np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match=r"image values 2\.\.2; expected \[0, 1\]"):
        load_samples(ACDC, sample, [0], canvas_size=8)
    first.unlink()
    first.write_text("not an h5 file")
    with pytest.raises(DataError, match=rf"{first}: cannot read HDF5 file"):
        read_h5(ACDC, first, ndim=2)
    first.unlink()
    with pytest.raises(
        DataError,
        match=r"train_slices.list line 1: patient099_frame01_slice_15 "
        r"has no file; expected .*slices/patient099_frame01_slice_15.h5 or .*data/patient099",
    ):
        scan_split(ACDC, root, 0, "train")
    volume = root / "data" / "patient011_frame01.h5"
    _write(volume, image=np.zeros((2, 4, 4), np.float32), label=np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=rf"{volume}: image \(2, 4, 4\) and label \(4, 4\)"):
        read_h5(ACDC, volume, ndim=3)
