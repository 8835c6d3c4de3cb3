"""Every DatasetSpec against the authors' real sample files (and its own internal consistency)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from dataloaders.datasets import DataError, decode_mask, load_samples, scan_split
from dataloaders.specs import BUSI, DATASETS, FUNDUS, MNMS, PROSTATE, DatasetSpec, get_spec


def _load(spec: DatasetSpec, root, split: str, size: int = 64, mask_size: int | None = None):
    files, domains = [], []
    for d in range(len(spec.domains)):
        found = scan_split(spec, root, d, split)
        files += found
        domains += [d] * len(found)
    return load_samples(spec, files, domains, canvas_size=size, mask_size=mask_size)


@pytest.mark.parametrize("spec", DATASETS.values(), ids=list(DATASETS))
def test_spec_is_consistent(spec: DatasetSpec) -> None:
    classes = sorted(index for _, index in spec.mask_encoding)
    assert classes == list(range(spec.num_classes + 1))  # every class once, background = 0
    assert len(spec.domain_titles) == len(spec.domains)
    assert len(spec.reference_train_counts) in (0, len(spec.domains))
    assert spec.rotation_fill_class == 0
    for _, region in spec.eval_regions:
        assert set(region) <= set(range(1, spec.num_classes + 1))
    raw_kind = tuple if spec.mask_mode == "RGB" else int
    assert all(isinstance(raw, raw_kind) for raw, _ in spec.mask_encoding)


def test_domain_index_accepts_number_digits_name_and_title() -> None:
    assert FUNDUS.domain_index(2) == 1
    assert FUNDUS.domain_index("3") == 2
    assert FUNDUS.domain_index("domain4") == 3
    assert FUNDUS.domain_index("Drishti-GS") == 0
    with pytest.raises(ValueError, match="1=Domain1"):
        FUNDUS.domain_index(5)
    with pytest.raises(KeyError, match="prostate"):
        get_spec("nope")


def test_prostate_samples(samples_root) -> None:
    root = samples_root / "ProstateSlice"
    # The real bad pair: I2CVB/train/image/00_01.png has no mask (the mask folder holds 00_00).
    with pytest.raises(DataError, match=r"I2CVB/train/image/00_01\.png: image has no mask"):
        scan_split(PROSTATE, root, PROSTATE.domain_index("I2CVB"), "train")
    for d, domain in enumerate(PROSTATE.domains):
        splits = ("test",) if domain == "I2CVB" else ("train", "test")
        for split in splits:
            files = scan_split(PROSTATE, root, d, split)
            assert [f.name for f in files] == [f"{domain}/00_00"]
            cached = load_samples(PROSTATE, files, [d], canvas_size=96, mask_size=384)
            assert cached.images.shape == (1, 1, 96, 96)
            assert cached.native_sizes == [(384, 384)]
            # The prostate is the black minority of the mask: 0 < fraction < 5 %.
            fraction = cached.masks.float().mean().item()
            assert 0.0 < fraction < 0.05
            assert set(cached.masks.unique().tolist()) == {0, 1}


def test_fundus_samples(samples_root) -> None:
    root = samples_root / "Fundus"
    for split in ("train", "test"):
        cached = _load(FUNDUS, root, split, size=64)
        assert cached.images.shape == (4, 3, 64, 64)
        assert cached.domains.tolist() == [0, 1, 2, 3]
        assert set(cached.native_sizes) == {(800, 800)}
        for mask in cached.masks:
            assert set(mask.unique().tolist()) == {0, 1, 2}
    # The RGB-stored masks decode to cup (1) enclosed by the rim (2): a dilated cup never
    # reaches the background, at native resolution.
    for path in sorted(root.glob("Domain*/*/ROIs/mask/*.png")):
        classes = decode_mask(FUNDUS, path)
        around = binary_dilation(classes == 1, iterations=2)
        assert set(np.unique(classes[around]).tolist()) == {1, 2}, path


def test_mnms_samples(samples_root) -> None:
    root = samples_root / "mnms"
    cached = _load(MNMS, root, "train", size=48, mask_size=MNMS.patch_size)
    assert cached.images.shape == (12, 1, 48, 48)
    assert cached.masks.shape == (12, 288, 288)
    assert cached.native_sizes[0] == (256, 216)  # vendorA train, W x H
    for mask in cached.masks:
        assert set(mask.unique().tolist()) == {0, 1, 2, 3}
    # Red = LV is ringed by green = MYO; it never touches blue = RV.
    for path in sorted(root.glob("vendor*/*/mask/*.png")):
        classes = decode_mask(MNMS, path)
        around = set(np.unique(classes[binary_dilation(classes == 1)]).tolist())
        assert 2 in around and 3 not in around, path


def test_busi_samples(samples_root) -> None:
    root = samples_root / "Dataset_BUSI_with_GT"
    train = [scan_split(BUSI, root, d, "train") for d in range(2)]
    test = [scan_split(BUSI, root, d, "test") for d in range(2)]
    # benign: 5 images -> int(0.2 * 5) = 1 test; malignant: 6 -> 1 test; "normal" is never read.
    assert [len(t) for t in train] == [4, 5] and [len(t) for t in test] == [1, 1]
    assert test[0][0].name == "benign/benign (5)"
    names = [f.name for files in train + test for f in files]
    assert not any(name.startswith("normal") for name in names)
    two = next(f for f in train[0] if f.name == "benign/benign (4)")
    assert [p.name for p in two.masks] == ["benign (4)_mask.png", "benign (4)_mask_1.png"]
    # Mode "1" and RGBA masks both decode to {0, 1}; the two masks merge by max (their union),
    # which is then resized NEAREST from the native size.
    first, second = (decode_mask(BUSI, p) for p in two.masks)
    union = np.maximum(first, second)
    assert union.sum() > max(first.sum(), second.sum())
    expected = np.array(Image.fromarray(union).resize((64, 64), Image.Resampling.NEAREST))
    merged = load_samples(BUSI, [two], [0], canvas_size=32, mask_size=64).masks[0]
    assert torch.equal(merged, torch.from_numpy(expected))
    cached = _load(BUSI, root, "train", size=40)
    assert cached.images.shape == (9, 1, 40, 40)
    assert set(cached.masks.unique().tolist()) == {0, 1}
