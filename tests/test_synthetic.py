"""The synthetic demo data: deterministic, in the SYNTHETIC layout, with real domain shift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataloaders.specs import SYNTHETIC
from dataloaders.splits import build_splits
from dataloaders.synthetic import MARKER, STYLES, generate_synthetic, main, render

SMALL = {"train_per_domain": 4, "test_per_domain": 2, "size": 64}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path) -> None:
    a = _files(generate_synthetic(tmp_path / "a", seed=3, **SMALL))
    b = _files(generate_synthetic(tmp_path / "b", seed=3, **SMALL))
    c = _files(generate_synthetic(tmp_path / "c", seed=4, **SMALL))
    assert len(a) == 3 * (4 + 2) * 2
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if "/image/" in k)


def test_marker_skips_or_regenerates(tmp_path) -> None:
    root = generate_synthetic(tmp_path, **SMALL)
    marker = json.loads((root / MARKER).read_text())
    assert marker["complete"] and marker["params"]["seed"] == 0
    probe = root / "siteA" / "train" / "image" / "0000.png"
    probe.write_bytes(b"edited")
    generate_synthetic(tmp_path, **SMALL)  # same parameters: nothing is rewritten
    assert probe.read_bytes() == b"edited"
    generate_synthetic(tmp_path, **{**SMALL, "train_per_domain": 2})  # stale files are removed
    assert probe.read_bytes() != b"edited"
    assert len(list((root / "siteA" / "train" / "image").iterdir())) == 2


def test_refuses_to_overwrite_foreign_folders(tmp_path) -> None:
    (tmp_path / "siteB").mkdir()
    with pytest.raises(FileExistsError, match="siteB: exists but"):
        generate_synthetic(tmp_path, **SMALL)
    with pytest.raises(ValueError, match="test_per_domain=0"):
        generate_synthetic(tmp_path / "x", **{**SMALL, "test_per_domain": 0})


def test_layout_goes_through_build_splits(tmp_path) -> None:
    root = generate_synthetic(tmp_path, **SMALL)
    splits = build_splits(SYNTHETIC, root, "siteA", 2, canvas_size=32, patch_size=16)
    assert len(splits.labeled) == 2 and len(splits.unlabeled) == 10
    assert [len(t) for t in splits.test.values()] == [2, 2, 2]
    assert set(splits.unlabeled.samples.masks.unique().tolist()) == {0, 1, 2}
    # Every image has an organ.
    assert all((m == 1).any() for m in splits.unlabeled.samples.masks)


def test_cli_writes_the_dataset(tmp_path, capsys) -> None:
    main([str(tmp_path), "--seed", "1", "--train_per_domain", "1", "--test_per_domain", "1"])
    assert "3 sites" in capsys.readouterr().out
    assert len(_files(tmp_path)) == 3 * 2 * 2


def _stats(name: str, n: int = 24, size: int = 96) -> dict[str, float]:
    images, masks = zip(
        *(render(np.random.default_rng([0, i]), STYLES[name], size) for i in range(n))
    )
    images, masks = np.stack(images).astype(float), np.stack(masks)
    background, organ = images[masks == 0], images[masks == 1]
    flat = images - np.stack([np.median(im) for im in images])[:, None, None]
    return {
        "background": background.mean(),
        "contrast": organ.mean() - background.mean(),
        "lesion": images[masks == 2].mean() - organ.mean(),
        "roughness": np.abs(np.diff(flat, axis=2))[masks[:, :, 1:] == 0].mean(),
        "organ_area": (masks >= 1).mean(),
        "lesion_rate": np.mean([(m == 2).any() for m in masks]),
    }


def test_domains_differ_and_objects_are_visible() -> None:
    stats = {name: _stats(name) for name in SYNTHETIC.domains}
    a, b, c = (stats[name] for name in SYNTHETIC.domains)
    # Intensity level and contrast shift between sites.
    assert a["background"] + 15 < c["background"] and b["background"] + 15 < a["background"]
    assert c["contrast"] < a["contrast"] - 15
    # siteB's lesions are darker than its organ, the others' brighter.
    assert b["lesion"] < -20 < 20 < min(a["lesion"], c["lesion"])
    # Texture and noise: siteA is the smoothest background.
    assert a["roughness"] < min(b["roughness"], c["roughness"])
    # Shape statistics: siteB's organs are smaller; lesions are most frequent at siteC.
    assert b["organ_area"] < 0.6 * min(a["organ_area"], c["organ_area"])
    assert c["lesion_rate"] > b["lesion_rate"]
    # Every site keeps the organ well above its background.
    assert all(s["contrast"] > 30 for s in stats.values())
