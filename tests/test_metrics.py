"""evaluation.metrics and evaluation.distances against medpy 0.5.2 (the reference's metric library)
and the empty-mask policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from scipy.ndimage import gaussian_filter

from evaluation import distances, metrics
from evaluation.metrics import region_masks, slice_metrics


def _blobs(rng: np.random.Generator, n: int, h: int, w: int, sigma: float) -> np.ndarray:
    """(n, h, w) bool random blobs: thresholded smoothed noise, of varying coverage."""
    out = []
    for _ in range(n):
        field = gaussian_filter(rng.standard_normal((h, w)), sigma)
        out.append(field > rng.uniform(-0.5, 1.5) * field.std())
    return np.stack(out)


def _special_masks(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Hand-made pairs: single pixels, masks touching the border, a full slice, lines, far
    apart objects (distances beyond every search window)."""
    pairs = []

    def pair() -> tuple[np.ndarray, np.ndarray]:
        pairs.append((np.zeros((h, w), bool), np.zeros((h, w), bool)))
        return pairs[-1]

    p, t = pair()  # one pixel each, in opposite corners
    p[0, 0], t[h - 1, w - 1] = True, True
    p, t = pair()  # the same single pixel
    p[h // 2, w // 3], t[h // 2, w // 3] = True, True
    p, t = pair()  # full slice against a border band
    p[:], t[:, : w // 4] = True, True
    p, t = pair()  # a row and a column
    p[h // 2, :], t[:, w // 2] = True, True
    p, t = pair()  # small squares in far corners plus a pixel on the edge
    p[:3, :3], t[-4:, -5:], t[0, w - 1] = True, True, True
    p, t = pair()  # one pixel against a large ring-shaped target
    yy, xx = np.mgrid[:h, :w]
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    p[h // 2, w // 2], t[(r2 < (min(h, w) / 2.2) ** 2) & (r2 > 9)] = True, True
    return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])


def _assert_matches_medpy(pred: np.ndarray, target: np.ndarray, out: dict) -> None:
    for i in range(pred.shape[0]):
        p, t = pred[i], target[i]
        assert p.any() and t.any(), "medpy comparisons need non-empty masks"
        expected = {
            "dice": medpy_binary.dc(p, t),
            "jaccard": medpy_binary.jc(p, t),
            "hd95": medpy_binary.hd95(p, t),
            "asd": medpy_binary.asd(p, t),
        }
        for name, value in expected.items():
            got = out[name][i].item()
            assert got == pytest.approx(value, rel=1e-6, abs=1e-9), (name, i, got, value)


@pytest.mark.parametrize(
    ("n", "h", "w", "sigma"),
    [(12, 24, 24, 2.0), (10, 37, 53, 3.0), (6, 150, 140, 6.0), (20, 9, 5, 0.8)],
)
def test_random_blobs_match_medpy(n: int, h: int, w: int, sigma: float) -> None:
    rng = np.random.default_rng(h * 1000 + w)
    pred, target = _blobs(rng, 3 * n, h, w, sigma), _blobs(rng, 3 * n, h, w, sigma)
    keep = pred.any((1, 2)) & target.any((1, 2))
    pred, target = pred[keep][:n], target[keep][:n]
    assert len(pred) >= n // 2
    out = slice_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    assert out["dice"].dtype == torch.float64 and out["dice"].shape == (len(pred),)
    _assert_matches_medpy(pred, target, out)


@pytest.mark.parametrize(("h", "w"), [(40, 40), (23, 71), (150, 131)])
def test_special_masks_match_medpy(h: int, w: int) -> None:
    pred, target = _special_masks(h, w)
    out = slice_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    _assert_matches_medpy(pred, target, out)
    assert out["hd95"][1].item() == 0.0 and out["dice"][1].item() == 1.0


def test_asd_is_from_prediction_to_target() -> None:
    # A full square against its centre pixel: the two directions differ a lot.
    pred = np.ones((1, 11, 11), bool)
    target = np.zeros_like(pred)
    target[0, 5, 5] = True
    out = slice_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    forward = medpy_binary.asd(pred[0], target[0])
    assert out["asd"].item() == pytest.approx(forward, rel=1e-9)
    assert out["asd"].item() != pytest.approx(medpy_binary.asd(target[0], pred[0]), rel=1e-3)


def test_hand_computed_distances() -> None:
    # Single pixels 3 columns apart: every surface distance is 3.
    pred = torch.zeros(1, 5, 8, dtype=torch.bool)
    target = torch.zeros_like(pred)
    pred[0, 2, 1], target[0, 2, 4] = True, True
    out = slice_metrics(pred, target)
    assert out["dice"].item() == 0.0 and out["jaccard"].item() == 0.0
    assert out["hd95"].item() == 3.0 and out["asd"].item() == 3.0
    # A 2x2 square against its top-left 2x1 half: Dice 2*2/(4+2), Jaccard 2/4; the two right
    # pixels are 1 away, everything else 0 -> asd = 2/4; hd95 of [0,0,1,1,0,0] = 1.
    pred = torch.zeros(1, 6, 6, dtype=torch.bool)
    target = torch.zeros_like(pred)
    pred[0, 2:4, 2:4], target[0, 2:4, 2] = True, True
    out = slice_metrics(pred, target)
    assert out["dice"].item() == pytest.approx(4 / 6)
    assert out["jaccard"].item() == pytest.approx(0.5)
    assert out["asd"].item() == pytest.approx(0.5)
    assert out["hd95"].item() == pytest.approx(1.0)


def test_small_chunks_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    pred, target = _special_masks(60, 45)
    pred = np.concatenate([pred, _blobs(rng, 4, 60, 45, 3.0) | pred[:1]])
    target = np.concatenate([target, _blobs(rng, 4, 60, 45, 3.0) | target[:1]])
    expected = slice_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    monkeypatch.setattr(distances, "_CHUNK_ELEMENTS", 5)
    monkeypatch.setattr(distances, "_WINDOWS", ())
    got = slice_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    for name in ("dice", "jaccard", "hd95", "asd"):
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_empty_policy() -> None:
    pred = torch.zeros(4, 10, 12, dtype=torch.bool)
    target = torch.zeros_like(pred)
    # 0: both empty; 1: missed (empty prediction); 2: false positive (empty target); 3: normal.
    target[1, 2:5, 2:5] = True
    pred[2, 6:8, 6:9] = True
    pred[3, 1:4, 1:4], target[3, 2:5, 2:5] = True, True
    out = slice_metrics(pred, target, penalty=37.5)
    assert out["dice"][:3].tolist() == [1.0, 0.0, 0.0]
    assert out["jaccard"][:3].tolist() == [1.0, 0.0, 0.0]
    assert math.isnan(out["hd95"][0].item()) and math.isnan(out["asd"][0].item())
    assert out["hd95"][1:3].tolist() == [37.5, 37.5] and out["asd"][1:3].tolist() == [37.5, 37.5]
    assert out["empty_pred"].tolist() == [True, True, False, False]
    assert out["empty_target"].tolist() == [True, False, True, False]
    # The non-empty slice is unaffected by its empty neighbours.
    _assert_matches_medpy(pred[3:].numpy(), target[3:].numpy(), {k: v[3:] for k, v in out.items()})
    assert slice_metrics(pred[1:2], target[1:2])["hd95"].item() == 100.0  # default penalty


def test_all_slices_empty() -> None:
    empty = torch.zeros(2, 7, 7, dtype=torch.bool)
    out = slice_metrics(empty, empty)
    assert out["dice"].tolist() == [1.0, 1.0]
    assert torch.isnan(out["hd95"]).all() and torch.isnan(out["asd"]).all()


def test_bad_inputs_raise() -> None:
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="bool"):
        slice_metrics(mask.long(), mask)
    with pytest.raises(ValueError, match="must match"):
        slice_metrics(mask, mask[:, :4])
    with pytest.raises(ValueError, match="integer"):
        region_masks(torch.zeros(2, 5, 5), [(1,)])


def test_region_masks_fundus_like() -> None:
    # 0 background, 1 cup inside 2 rim: cup = {1}, whole disc = {1, 2} (overlapping regions).
    labels = torch.zeros(2, 9, 9, dtype=torch.uint8)
    labels[0, 1:8, 1:8] = 2
    labels[0, 3:6, 3:6] = 1
    labels[1, 0, 0] = 2
    masks = region_masks(labels, [(1,), (1, 2)])
    assert masks.shape == (2, 2, 9, 9) and masks.dtype == torch.bool
    assert masks[0, 0].sum().item() == 9 and masks[0, 1].sum().item() == 49
    assert torch.equal(masks[0, 0], labels[0] == 1)
    assert torch.equal(masks[0, 1], labels[0] > 0)
    assert masks[1, 0].sum().item() == 0 and masks[1, 1].sum().item() == 1


def _acdc_volume_pairs(root) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, target) bool volumes per class of the real ACDC test volumes; predictions are
    the labels shifted by a voxel in z, dilated in-plane or with a far false-positive blob."""
    import h5py
    from scipy.ndimage import binary_dilation, shift

    pairs = []
    for case in (root / "test.list").read_text().split():
        with h5py.File(root / "data" / f"{case}.h5") as f:
            label = f["label"][()]
        for c in (1, 2, 3):
            target = label == c
            moved = shift(target.astype(np.uint8), (1, 0, 2), order=0).astype(bool)
            grown = binary_dilation(target, iterations=2)
            blob = target.copy()
            blob[-1, :3, :3] = True  # a far-away false positive on the last slice
            pairs += [(moved, target), (grown, target), (blob, target)]
    return pairs


def test_volume_metrics_match_medpy_on_real_acdc_volumes(acdc_root) -> None:
    pairs = _acdc_volume_pairs(acdc_root)
    shapes = {p.shape for p, _ in pairs}
    for shape in shapes:
        group = [(p, t) for p, t in pairs if p.shape == shape]
        pred = torch.from_numpy(np.stack([p for p, _ in group]))
        target = torch.from_numpy(np.stack([t for _, t in group]))
        out = metrics.volume_metrics(pred, target)
        for i, (p, t) in enumerate(group):
            assert out["dice"][i].item() == pytest.approx(medpy_binary.dc(p, t), abs=1e-12)
            assert out["jaccard"][i].item() == pytest.approx(medpy_binary.jc(p, t), abs=1e-12)
            assert out["hd95"][i].item() == pytest.approx(medpy_binary.hd95(p, t), abs=1e-9)
            assert out["asd"][i].item() == pytest.approx(medpy_binary.asd(p, t), abs=1e-9)
    assert len(pairs) == 27 and len(shapes) >= 2


def test_volume_surfaces_are_3d_and_slices_stay_2d() -> None:
    # A 3x3x3 cube: in 3-D only its centre voxel is interior; as 3 slices of 3x3 squares each
    # slice keeps its centre pixel interior.
    cube = torch.ones(1, 3, 3, 3, dtype=torch.bool)
    cube = torch.nn.functional.pad(cube, (1, 1, 1, 1, 1, 1))
    assert int(distances.surface(cube).sum()) == 26
    assert int(distances.surface(cube[0]).sum()) == 3 * 8


def test_volume_metrics_checks_shapes() -> None:
    vol = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"volume_metrics: pred must be an \(N, D, H, W\)"):
        metrics.volume_metrics(vol[0], vol[0])
