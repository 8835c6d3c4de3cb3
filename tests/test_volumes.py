"""Per-volume evaluation (evaluation.volumes through evaluation.evaluate) on real ACDC volumes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary

from dataloaders.specs import ACDC
from dataloaders.splits import build_test_sets
from evaluation.evaluate import evaluate
from evaluation.report import format_class_table, format_table


@pytest.fixture(scope="module")
def test_sets(acdc_root: Path) -> dict:
    return build_test_sets(ACDC, acdc_root, canvas_size=32, patch_size=32, num_workers=1)


def _oracle(dataset) -> callable:
    """Native-size one-hot logits of the ground truth, found by the canvas slice it is given."""
    table = {}
    for item in (dataset[i] for i in range(len(dataset))):
        for image, label in zip(item["image"], item["mask"]):
            table[image.numpy().tobytes()] = label

    def predict(images: torch.Tensor) -> torch.Tensor:
        keys = [(i * 255).round().to(torch.uint8).numpy().tobytes() for i in images]
        labels = torch.stack([table[k] for k in keys]).long()
        return torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()

    return predict


def test_an_oracle_scores_perfectly_slice_order_and_native_size_kept(test_sets) -> None:
    out = evaluate(
        {"oracle": _oracle(test_sets["ACDC"])},
        test_sets,
        ACDC,
        patch_size=32,
        device="cpu",
        batch_size=4,
    )["oracle"]
    domain = out["domains"]["ACDC"]
    assert domain["n"] == 3 and set(domain["volumes"]) == set(test_sets["ACDC"].names)
    for region in ("RV", "MYO", "LV"):
        assert domain["regions"][region]["dice"] == 1.0
        assert domain["regions"][region]["hd95"] == 0.0


def test_volume_scores_equal_medpy_on_the_native_volumes(test_sets, acdc_root: Path) -> None:
    def all_lv(images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], 4, 8, 8)
        logits[:, 3] = 1
        return logits

    out = evaluate({"lv": all_lv}, test_sets, ACDC, patch_size=32, device="cpu")["lv"]
    per_volume = out["domains"]["ACDC"]["volumes"]
    expected = []
    for name in test_sets["ACDC"].names:
        with h5py.File(acdc_root / "data" / f"{name.split('/')[1]}.h5") as f:
            target = f["label"][()] == 3
        pred = np.ones_like(target)
        values = {
            "dice": medpy_binary.dc(pred, target),
            "hd95": medpy_binary.hd95(pred, target),
            "asd": medpy_binary.asd(pred, target),
        }
        for key, value in values.items():
            assert per_volume[name]["LV"][key] == pytest.approx(value, abs=1e-9)
        expected.append(values["dice"])
    assert out["domains"]["ACDC"]["regions"]["LV"]["dice"] == pytest.approx(np.mean(expected))
    assert per_volume[name]["RV"]["hd95"] == 100.0  # a missed class scores the penalty
    table = format_class_table({"lv": out})
    assert "mean over 3 volumes" in table and table.splitlines()[4].split()[0] == "LV"
    assert "3 volumes; empty" in format_table({"lv": out}, ACDC)
