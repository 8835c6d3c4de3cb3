"""File discovery, decoding, split selection (dataloaders.datasets, dataloaders.split_plan,
dataloaders.splits) and every bad-input error of the data layer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataloaders.datasets import (
    DataError,
    SegmentationDataset,
    decode_mask,
    load_samples,
    scan_split,
)
from dataloaders.specs import BUSI, FUNDUS, MNMS, SYNTHETIC
from dataloaders.split_plan import plan_splits
from dataloaders.splits import build_splits

SPEC = SYNTHETIC  # split_folders, gray masks 0 = background, 255 = organ, 128 = lesion


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image_value(d: int, i: int) -> int:
    return 10 * (d + 1) + i  # a constant image per sample identifies it after resizing


def make_split_folders(root: Path, train=(3, 4, 2), test=(1, 2, 1), size=(20, 16)) -> Path:
    """A tiny SYNTHETIC-layout dataset: constant images, masks with organ and lesion pixels."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    mask[4:12, 5:15] = 255
    mask[6:8, 8:10] = 128
    for d, domain in enumerate(SPEC.domains):
        for split, count in (("train", train[d]), ("test", test[d])):
            folder = root / domain / split
            (folder / "image").mkdir(parents=True, exist_ok=True)
            (folder / "mask").mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _png(
                    folder / "image" / f"{i:04d}.png", np.full((h, w), _image_value(d, i), np.uint8)
                )
                _png(folder / "mask" / f"{i:04d}.png", mask)
    return root


def make_class_folders(root: Path, counts=(5, 6)) -> Path:
    """A tiny BUSI-layout dataset: '<cls> (N).png' with '<cls> (N)_mask.png'."""
    for d, domain in enumerate(BUSI.domains):
        for n in range(1, counts[d] + 1):
            _png(root / domain / f"{domain} ({n}).png", np.full((12, 10), n, np.uint8))
            mask = np.zeros((12, 10), np.uint8)
            mask[n % 12, :] = 255
            _png(root / domain / f"{domain} ({n})_mask.png", mask)
    return root


# --------------------------------------------------------------------------------------------
# Valid input


def test_scan_split_sorts_full_path_strings(tmp_path) -> None:
    root = make_split_folders(tmp_path, train=(0, 0, 0), test=(0, 0, 0))
    for name in ("G-2-R", "G-10-L", "G-1-L"):
        for sub in ("image", "mask"):
            _png(root / "siteA" / "train" / sub / f"{name}.png", np.zeros((4, 4), np.uint8))
    files = scan_split(SPEC, root, 0, "train")
    assert [f.name for f in files] == ["siteA/G-1-L", "siteA/G-10-L", "siteA/G-2-R"]
    assert files[0].masks == (root / "siteA" / "train" / "mask" / "G-1-L.png",)


def test_build_splits_sets_sizes_and_order(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    splits = build_splits(SPEC, root, 2, 2, canvas_size=8, patch_size=6)
    labeled, unlabeled = splits.labeled.samples, splits.unlabeled.samples
    assert splits.labeled_domain == 1
    assert labeled.names == ["siteB/0000", "siteB/0001"]  # the first lb_num, sorted
    assert unlabeled.names == [
        *(f"siteA/{i:04d}" for i in range(3)),
        "siteB/0002",
        "siteB/0003",
        *(f"siteC/{i:04d}" for i in range(2)),
    ]
    assert unlabeled.domains.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert labeled.images.shape == (2, 1, 8, 8) and labeled.images.dtype == torch.uint8
    assert labeled.masks.shape == (2, 8, 8) and unlabeled.masks.shape == (7, 8, 8)
    assert list(splits.test) == list(SPEC.domains)
    assert [len(t) for t in splits.test.values()] == [1, 2, 1]
    assert splits.test["siteB"].samples.masks.shape == (2, 6, 6)
    # Constant images stay constant through the resize: each sample keeps its own image.
    assert unlabeled.images[3].unique().tolist() == [_image_value(1, 2)]
    assert set(unlabeled.masks.unique().tolist()) == {0, 1, 2}


def test_lb_domain_forms_and_seeded_pick(tmp_path) -> None:
    root = make_split_folders(tmp_path, train=(2, 10, 2))
    for form in (2, "2", "siteB", "SITEB"):
        assert plan_splits(SPEC, root, form, 3).labeled_domain == 1
    first = plan_splits(SPEC, root, 2, 3)
    seeded = plan_splits(SPEC, root, 2, 3, lb_seed=7)
    assert [f.name for f in seeded.labeled] == [
        f.name for f in plan_splits(SPEC, root, 2, 3, lb_seed=7).labeled
    ]
    assert [f.name for f in seeded.labeled] != [f.name for f in first.labeled]
    names = [f.name for f in seeded.labeled]
    assert names == sorted(names)
    assert not set(names) & {f.name for f in seeded.unlabeled}
    assert len(seeded.unlabeled) == 14 - 3


def test_validation_split_is_the_sorted_tail_of_the_train_files(tmp_path) -> None:
    root = make_split_folders(tmp_path, train=(5, 10, 2))
    plain = plan_splits(SPEC, root, 2, 3)
    plan = plan_splits(SPEC, root, 2, 3, val_fraction=0.2)
    # ceil(0.2 n) per domain, the last files in sorted order, labeled files never among them.
    assert [[f.name for f in files] for files in plan.val] == [
        ["siteA/0004"],
        ["siteB/0008", "siteB/0009"],
        ["siteC/0001"],
    ]
    assert [f.name for f in plan.labeled] == [f.name for f in plain.labeled]
    val_names = {f.name for files in plan.val for f in files}
    assert not val_names & {f.name for f in plan.unlabeled}
    assert {f.name for f in plan.unlabeled} == {f.name for f in plain.unlabeled} - val_names
    assert plan.unlabeled_domains == [0] * 4 + [1] * 5 + [2]
    assert plain.val == []
    splits = build_splits(SPEC, root, 2, 3, canvas_size=8, patch_size=6, val_fraction=0.2)
    assert list(splits.val) == list(SPEC.domains)
    assert [len(v) for v in splits.val.values()] == [1, 2, 1]
    assert splits.val["siteB"].samples.masks.shape == (2, 6, 6)  # at the metric resolution
    assert build_splits(SPEC, root, 2, 3, canvas_size=8, patch_size=6).val == {}
    # The labeled domain keeps 1 file after lb_num=9, fewer than ceil(0.5 * 10) = 5: it is held
    # out, and siteB contributes nothing to the unlabeled set.
    crowded = plan_splits(SPEC, root, 2, 9, val_fraction=0.5)
    assert [f.name for f in crowded.val[1]] == ["siteB/0009"]
    assert 1 not in crowded.unlabeled_domains


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_validation_fraction_out_of_range(tmp_path, fraction: float) -> None:
    root = make_split_folders(tmp_path)
    with pytest.raises(DataError, match=r"val_fraction=.*\[0, 1\)"):
        plan_splits(SPEC, root, 2, 2, val_fraction=fraction)


def test_validation_split_needs_files_left_in_every_domain(tmp_path) -> None:
    root = make_split_folders(tmp_path, train=(3, 4, 2))
    with pytest.raises(DataError, match="no train files left for a validation set in siteB"):
        plan_splits(SPEC, root, 2, 4, val_fraction=0.2)


def test_masks_are_resized_from_the_native_mask(tmp_path) -> None:
    root = make_split_folders(tmp_path, train=(0, 0, 0), test=(0, 0, 0))
    raw = np.where((np.arange(10)[:, None] + np.arange(10)) % 2 == 0, 255, 0).astype(np.uint8)
    _png(root / "siteA" / "train" / "image" / "a.png", np.zeros((10, 10), np.uint8))
    _png(root / "siteA" / "train" / "mask" / "a.png", raw)
    files = scan_split(SPEC, root, 0, "train")
    # A 4-px canvas would destroy the 1-px checkerboard; the mask must not go through it.
    cached = load_samples(SPEC, files, [0], canvas_size=4, mask_size=10)
    assert torch.equal(cached.masks[0], torch.from_numpy(raw // 255))
    cached = load_samples(SPEC, files, [0], canvas_size=4, mask_size=5)
    expected = np.array(Image.fromarray(raw // 255).resize((5, 5), Image.Resampling.NEAREST))
    assert torch.equal(cached.masks[0], torch.from_numpy(expected))


def test_decode_mask_by_hand(tmp_path) -> None:
    gray = _png(tmp_path / "g.png", np.array([[0, 255], [128, 0]], np.uint8))
    assert decode_mask(SPEC, gray).tolist() == [[0, 1], [2, 0]]
    assert decode_mask(FUNDUS, gray).tolist() == [[1, 0], [2, 1]]  # 0 cup, 128 rim, 255 bg
    colour = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 0, 0]]], np.uint8)
    assert decode_mask(MNMS, _png(tmp_path / "c.png", colour)).tolist() == [[1, 2], [3, 0]]


def test_dataset_items_and_rgb_images(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    rgb = dataclasses.replace(SPEC, in_channels=3)
    files = scan_split(rgb, root, 1, "train")
    cached = load_samples(rgb, files, [1] * len(files), canvas_size=8, mask_size=4, progress=True)
    item = SegmentationDataset(cached)[2]
    assert set(item) == {"image", "mask", "domain", "index"}
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (4, 4) and item["mask"].dtype == torch.uint8
    assert item["domain"].dtype == torch.int64 and item["domain"].ndim == 0
    assert int(item["domain"]) == 1 and item["index"] == 2
    assert item["image"].unique().tolist() == [_image_value(1, 2)]


def test_class_folders_split_and_merge(tmp_path) -> None:
    root = make_class_folders(tmp_path, counts=(5, 12))
    _png(root / "benign" / "benign (3)_mask_1.png", np.full((12, 10), 255, np.uint8))
    _png(root / "normal" / "normal (1).png", np.zeros((4, 4), np.uint8))  # never read
    train, test = scan_split(BUSI, root, 1, "train"), scan_split(BUSI, root, 1, "test")
    assert len(train) == 10 and len(test) == 2  # int(0.2 * 12) = 2, the last two sorted
    assert [f.name for f in test] == ["malignant/malignant (8)", "malignant/malignant (9)"]
    three = next(f for f in scan_split(BUSI, root, 0, "train") if f.name.endswith("(3)"))
    assert [p.name for p in three.masks] == ["benign (3)_mask.png", "benign (3)_mask_1.png"]
    merged = load_samples(BUSI, [three], [0], canvas_size=4, mask_size=12).masks[0]
    assert merged.min().item() == 1  # the all-lesion second mask wins by max


def test_full_busi(busi_root) -> None:
    train = [scan_split(BUSI, busi_root, d, "train") for d in range(2)]
    test = [scan_split(BUSI, busi_root, d, "test") for d in range(2)]
    assert [len(t) for t in train] == [350, 168] and [len(t) for t in test] == [87, 42]
    assert test[0][-1].name == "benign/benign (99)"  # byte order: (1) < (10) < (100) < (99)
    plan = plan_splits(BUSI, busi_root, "benign", 64, labeled_bs=4)
    assert len(plan.labeled) == 64 and len(plan.unlabeled) == 454
    assert [f.name for f in plan.labeled[:3]] == [
        "benign/benign (1)",
        "benign/benign (10)",
        "benign/benign (100)",
    ]
    few = train[0][:2] + test[1][-2:]
    cached = load_samples(BUSI, few, [0, 0, 1, 1], canvas_size=32, mask_size=256)
    assert set(cached.masks.unique().tolist()) == {0, 1}
    assert all(m.sum() > 0 for m in cached.masks)


# --------------------------------------------------------------------------------------------
# Bad input: each raises DataError naming the file or key


def test_missing_root(tmp_path) -> None:
    with pytest.raises(DataError, match="nowhere: dataset root not found"):
        build_splits(SPEC, tmp_path / "nowhere", 1, 1, canvas_size=8, patch_size=8)


def test_missing_domain_folder(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    for path in sorted((root / "siteC").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "siteC").rmdir()
    with pytest.raises(DataError, match="siteC: domain folder not found"):
        plan_splits(SPEC, root, 1, 1)


def test_missing_image_folder(tmp_path) -> None:
    root = make_split_folders(tmp_path, test=(1, 0, 1))
    (root / "siteB" / "test" / "image").rmdir()
    with pytest.raises(DataError, match=r"siteB/test/image: folder not found"):
        plan_splits(SPEC, root, 1, 1)


def test_image_without_mask(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    (root / "siteB" / "train" / "mask" / "0001.png").unlink()
    with pytest.raises(DataError, match=r"siteB/train/image/0001\.png: image has no mask"):
        plan_splits(SPEC, root, 1, 1)


def test_mask_without_image(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    (root / "siteA" / "test" / "image" / "0000.png").unlink()
    with pytest.raises(DataError, match=r"siteA/test/mask/0000\.png: mask has no image"):
        plan_splits(SPEC, root, 1, 1)


def test_unexpected_mask_value(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    bad = np.zeros((16, 20), np.uint8)
    bad[0, :3] = [7, 7, 200]
    _png(root / "siteC" / "train" / "mask" / "0001.png", bad)
    with pytest.raises(
        DataError, match=r"siteC/train/mask/0001\.png: unexpected mask values \[7, 200\]"
    ):
        build_splits(SPEC, root, 1, 1, canvas_size=8, patch_size=8)


def test_unexpected_mask_colour(tmp_path) -> None:
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 255, 0)
    path = _png(tmp_path / "m.png", colour)
    with pytest.raises(DataError, match=r"m\.png: unexpected mask values \[\(255, 255, 0\)\]"):
        decode_mask(MNMS, path)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_image(tmp_path, kind: str) -> None:
    root = make_split_folders(tmp_path, size=(64, 64))
    path = root / "siteA" / "train" / "image" / "0002.png"
    if kind == "garbage":
        path.write_bytes(b"not a png at all")
    else:
        _png(path, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"siteA/train/image/0002\.png: cannot read image"):
        build_splits(SPEC, root, 1, 1, canvas_size=8, patch_size=8)


def test_mask_of_another_size(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    _png(root / "siteA" / "test" / "mask" / "0000.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError, match=r"siteA/test/mask/0000\.png: mask size 16x16 differs"):
        build_splits(SPEC, root, 1, 1, canvas_size=8, patch_size=8)


@pytest.mark.parametrize("lb_num", [0, 5])
def test_lb_num_out_of_range(tmp_path, lb_num: int) -> None:
    root = make_split_folders(tmp_path)
    with pytest.raises(DataError, match=rf"lb_num={lb_num}: expected 1\.\.4"):
        plan_splits(SPEC, root, "siteB", lb_num)


def test_labeled_set_smaller_than_batch(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    with pytest.raises(DataError, match="labeled_bs=4.*loops forever"):
        build_splits(SPEC, root, 2, 3, canvas_size=8, patch_size=8, labeled_bs=4)


def test_unknown_domain_name(tmp_path) -> None:
    root = make_split_folders(tmp_path)
    with pytest.raises(DataError, match=r"unknown domain 'siteZ'; expected one of 1=siteA"):
        plan_splits(SPEC, root, "siteZ", 1)
    with pytest.raises(ValueError, match="unknown domain 4"):  # DataError is a ValueError
        plan_splits(SPEC, root, 4, 1)


def test_empty_or_small_unlabeled_set(tmp_path) -> None:
    root = make_split_folders(tmp_path, train=(2, 0, 0))
    with pytest.raises(DataError, match="0 unlabeled train samples left after taking lb_num=2"):
        plan_splits(SPEC, root, 1, 2)
    root = make_split_folders(tmp_path / "small", train=(3, 1, 1))
    assert len(plan_splits(SPEC, root, 1, 1, unlabeled_bs=4).unlabeled) == 4
    with pytest.raises(DataError, match="3 unlabeled train samples.*expected at least 4"):
        plan_splits(SPEC, root, 1, 2, unlabeled_bs=4)


def test_class_folder_pairing_errors(tmp_path) -> None:
    root = make_class_folders(tmp_path / "a")
    (root / "benign" / "benign (2)_mask.png").unlink()
    with pytest.raises(DataError, match=r"benign \(2\)\.png: image has no mask"):
        scan_split(BUSI, root, 0, "train")
    root = make_class_folders(tmp_path / "b")
    (root / "malignant" / "malignant (4).png").unlink()
    with pytest.raises(DataError, match=r"malignant \(4\)_mask\.png: mask has no image"):
        scan_split(BUSI, root, 1, "test")
    root = make_class_folders(tmp_path / "c")
    _png(root / "benign" / "benign (1)_mask_old.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(DataError, match=r"benign \(1\)_mask_old\.png: unexpected mask name"):
        scan_split(BUSI, root, 0, "train")


def test_tiny_class_folder_has_no_test_set(tmp_path) -> None:
    root = make_class_folders(tmp_path, counts=(4, 6))
    # int(0.2 * 4) = 0: the test set is empty (the reference's [-0:] would take all four).
    assert scan_split(BUSI, root, 0, "test") == []
    assert len(scan_split(BUSI, root, 0, "train")) == 4
    with pytest.raises(DataError, match="benign: no test samples"):
        plan_splits(BUSI, root, 2, 1)
