"""evaluation.evaluate, summary and report: aggregation as the paper's tables, empty counts,
callbacks and outputs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from dataloaders.specs import FUNDUS, PROSTATE, SYNTHETIC
from evaluation.evaluate import evaluate
from evaluation.report import format_table, results_to_csv, to_json_ready

P = 16  # patch size of the tiny test sets
LEVEL = 60  # image gray level per class index: the oracle reads the mask back from the image


class TinyTestSet(Dataset):
    """Items as the project's test datasets give them; the image encodes the mask (class * 60)
    unless ``hide`` lists the index, in which case the image is black."""

    def __init__(self, masks: torch.Tensor, channels: int, hide: tuple[int, ...] = ()) -> None:
        self.masks = masks.to(torch.uint8)
        self.channels, self.hide = channels, set(hide)
        self.names = [f"case{i:02d}" for i in range(len(masks))]
        self.reads = 0

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        image = (self.masks[i] * LEVEL).expand(self.channels, P, P).clone()
        if i in self.hide:
            image.zero_()
        return {"image": image, "mask": self.masks[i], "domain": torch.tensor(0), "index": i}


def oracle(num_classes: int, transform=None):
    """Predictor decoding the class map from the image, as one-hot logits (B, C+1, P, P)."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        labels = (images[:, 0] * 255 / LEVEL).round().long()
        if transform is not None:
            labels = transform(labels)
        return F.one_hot(labels, num_classes + 1).permute(0, 3, 1, 2).float()

    return predict


def background(num_classes: int):
    """Predictor of all background, at half resolution (exercises the upsampling)."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], num_classes + 1, P // 2, P // 2)
        logits[:, 0] = 1.0
        return logits

    return predict


def square(n: int, cls: int, top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(n, P, P, dtype=torch.uint8)
    mask[:, top : top + size, left : left + size] = cls
    return mask


def test_oracle_and_background_on_two_regions() -> None:
    masks = square(5, 1, 2, 2, 8)
    masks[:2, 4:7, 4:7] = 2  # lesion in slices 0-1 only; slice 4 has nothing at all
    masks[4] = 0
    test_sets = {"siteA": TinyTestSet(masks, 1)}
    results = evaluate(
        {"oracle": oracle(2), "bg": background(2)},
        test_sets,
        SYNTHETIC,
        patch_size=P,
        device="cpu",
        batch_size=2,
        penalty=100.0,
    )
    good = results["oracle"]["domains"]["siteA"]
    assert good["n"] == 5
    for region in ("organ", "lesion"):
        assert good["regions"][region]["dice"] == 1.0
        assert good["regions"][region]["jaccard"] == 1.0
        assert good["regions"][region]["hd95"] == 0.0 and good["regions"][region]["asd"] == 0.0
    assert good["regions"]["lesion"]["counts"]["both_empty"] == 3
    assert good["regions"]["organ"]["counts"]["both_empty"] == 1
    assert good["regions"]["lesion"]["counts"]["one_empty"] == 0

    bad = results["bg"]["domains"]["siteA"]["regions"]
    # organ: 4 missed slices (Dice 0, distance 100) and 1 both-empty slice (Dice 1, no distance)
    assert bad["organ"]["dice"] == pytest.approx(1 / 5)
    assert bad["organ"]["hd95"] == 100.0 and bad["organ"]["asd"] == 100.0
    assert bad["organ"]["counts"] == {
        "n": 5,
        "empty_target": 1,
        "empty_pred": 5,
        "both_empty": 1,
        "one_empty": 4,
        "missed": 4,
        "false_positive": 0,
    }
    assert bad["lesion"]["dice"] == pytest.approx(3 / 5)
    assert bad["lesion"]["counts"]["missed"] == 2
    assert results["bg"]["penalty"] == 100.0


def test_domains_are_averaged_unweighted() -> None:
    # BIDMC: 3 slices, the oracle sees the mask in slice 0 only (Dice 1, 0, 0; hd95 0, 100, 100).
    # BMC: 1 slice, seen (Dice 1, hd95 0). Unweighted: Dice (1/3 + 1) / 2 = 2/3, not 2/4.
    test_sets = {
        "BIDMC": TinyTestSet(square(3, 1, 3, 3, 6), 1, hide=(1, 2)),
        "BMC": TinyTestSet(square(1, 1, 5, 4, 7), 1),
    }
    results = evaluate({"m": oracle(1)}, test_sets, PROSTATE, patch_size=P, device="cpu")
    domains = results["m"]["domains"]
    assert domains["BIDMC"]["regions"]["prostate"]["dice"] == pytest.approx(1 / 3)
    assert domains["BIDMC"]["regions"]["prostate"]["hd95"] == pytest.approx(200 / 3)
    assert domains["BMC"]["regions"]["prostate"]["dice"] == 1.0
    overall = results["m"]["mean"]
    assert overall["regions"]["prostate"]["dice"] == pytest.approx(2 / 3)
    assert overall["regions"]["prostate"]["hd95"] == pytest.approx(100 / 3)
    assert overall["mean"]["dice"] == pytest.approx(2 / 3)
    assert overall["regions"]["prostate"]["counts"]["n"] == 4
    assert overall["regions"]["prostate"]["counts"]["missed"] == 2


def test_fundus_overlapping_regions() -> None:
    masks = square(2, 2, 2, 2, 10)  # rim
    masks[:, 5:9, 5:9] = 1  # cup inside the disc
    test_sets = {"Domain1": TinyTestSet(masks, 3)}

    def cup_as_rim(labels: torch.Tensor) -> torch.Tensor:
        return torch.where(labels == 1, 2, labels)

    results = evaluate(
        {"m": oracle(2, cup_as_rim)}, test_sets, FUNDUS, patch_size=P, device="cpu", penalty=50.0
    )
    regions = results["m"]["domains"]["Domain1"]["regions"]
    assert regions["disc"]["dice"] == 1.0 and regions["disc"]["hd95"] == 0.0
    assert regions["cup"]["dice"] == 0.0 and regions["cup"]["hd95"] == 50.0
    assert regions["cup"]["counts"]["missed"] == 2
    assert results["m"]["domains"]["Domain1"]["mean"]["dice"] == 0.5
    table = format_table(results, FUNDUS)
    assert "Domain1 (Drishti-GS)" in table
    assert "Dice cup" in table and "Dice disc" in table and "Dice mean" in table
    assert "missed 2, false positive 0" in table and "HD95/ASD 50 px" in table


def test_two_predictors_share_one_pass_and_callback() -> None:
    test_sets = {
        "siteA": TinyTestSet(square(5, 1, 1, 1, 5), 1),
        "siteB": TinyTestSet(square(3, 2, 6, 6, 4), 1),
    }
    calls = []

    def on_batch(model: str, domain: str, payload: dict) -> None:
        calls.append((model, domain, payload))

    results = evaluate(
        {"a": oracle(2), "b": background(2)},
        test_sets,
        SYNTHETIC,
        patch_size=P,
        device="cpu",
        batch_size=2,
        on_batch=on_batch,
    )
    assert [t.reads for t in test_sets.values()] == [5, 3]  # each item read once for both
    assert set(results) == {"a", "b"}
    assert results["a"]["mean"]["mean"]["dice"] == 1.0
    assert results["b"]["mean"]["regions"]["organ"]["dice"] == pytest.approx(0.5)
    # 3 + 2 batches, two models each
    assert [(m, d) for m, d, _ in calls].count(("a", "siteA")) == 3
    assert len(calls) == 10
    _, _, payload = calls[0]
    assert payload["images"].shape == (2, 1, P, P) and payload["images"].max() <= 1.0
    assert payload["pred"].shape == (2, P, P) and payload["pred"].dtype == torch.int64
    assert torch.equal(payload["pred"], payload["target"])
    assert payload["indices"].tolist() == [0, 1]
    assert payload["names"] == ["case00", "case01"]
    assert payload["metrics"]["dice"].shape == (2, 2)


def test_json_round_trip_csv_and_table(tmp_path) -> None:
    masks = square(3, 1, 2, 2, 6)
    masks[0] = 0  # both empty for the background model -> NaN distances in that slice only
    test_sets = {"siteA": TinyTestSet(masks[:1], 1), "siteC": TinyTestSet(masks, 1)}
    results = evaluate({"bg": background(2)}, test_sets, SYNTHETIC, patch_size=P, device="cpu")
    lesion = results["bg"]["domains"]["siteA"]["regions"]["lesion"]
    assert math.isnan(lesion["hd95"])  # every slice both-empty: undefined, not 0 or 100

    text = json.dumps(to_json_ready(results), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["bg"]["domains"]["siteA"]["regions"]["lesion"]["hd95"] is None
    assert loaded["bg"]["domains"]["siteC"]["regions"]["organ"]["hd95"] == 100.0
    assert loaded["bg"]["mean"]["regions"]["organ"]["dice"] == pytest.approx((1 + 1 / 3) / 2)
    assert format_table(loaded, SYNTHETIC) == format_table(results, SYNTHETIC)

    path = tmp_path / "out" / "test.csv"
    results_to_csv(results, path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == (2 + 1) * (2 + 1)  # (domains + mean) x (regions + mean)
    by_key = {(r["domain"], r["region"]): r for r in rows}
    assert float(by_key["siteC", "organ"]["dice"]) == pytest.approx(1 / 3)
    assert by_key["siteC", "organ"]["missed"] == "2" and by_key["siteC", "organ"]["n"] == "3"
    assert by_key["siteA", "lesion"]["hd95"] == ""
    assert by_key["mean", "mean"]["n"] == "4"
    assert float(by_key["mean", "mean"]["dice"]) == pytest.approx(
        results["bg"]["mean"]["mean"]["dice"]
    )

    table = format_table(results, SYNTHETIC)
    assert "siteA" in table and "siteC" in table and "\nmean" in table
    assert "66.67" in table  # organ Dice x100 over domains: (100 + 33.33) / 2
    site_a = next(line for line in table.splitlines() if line.startswith("siteA"))
    assert site_a.split()[-2:] == ["-", "-"]  # undefined HD95/ASD shown as "-", not a number


def test_bad_inputs_raise_clear_errors() -> None:
    good = {"siteA": TinyTestSet(square(2, 1, 2, 2, 5), 1)}
    kwargs = {"patch_size": P, "device": "cpu"}
    with pytest.raises(ValueError, match="expected logits"):
        evaluate({"m": oracle(1)}, good, SYNTHETIC, **kwargs)  # 2 channels instead of 3
    with pytest.raises(ValueError, match="unknown synthetic domain 'siteZ'"):
        evaluate({"m": oracle(2)}, {"siteZ": good["siteA"]}, SYNTHETIC, **kwargs)
    with pytest.raises(ValueError, match=r"masks must be \(B, 8, 8\)"):
        evaluate({"m": oracle(2)}, good, SYNTHETIC, patch_size=8, device="cpu")
    with pytest.raises(ValueError, match="class indices 0..2"):
        bad_class = {"siteA": TinyTestSet(square(1, 3, 0, 0, 2), 1)}
        evaluate({"m": oracle(2)}, bad_class, SYNTHETIC, **kwargs)
    with pytest.raises(ValueError, match="at least one predictor and one test set"):
        evaluate({"m": oracle(2)}, {}, SYNTHETIC, **kwargs)
    with pytest.raises(ValueError, match="is empty"):
        evaluate(
            {"m": oracle(2)}, {"siteA": TinyTestSet(square(0, 1, 0, 0, 2), 1)}, SYNTHETIC, **kwargs
        )
