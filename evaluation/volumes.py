"""Per-volume evaluation (datasets whose ``eval_unit`` is "volume", e.g. ACDC).

As SSL4MIS' ``test_single_volume``: every slice of a volume is predicted at the model's input
size, the prediction is brought back to the slice's native size, the slices are stacked into
the volume, and Dice, Jaccard, HD95 and ASD are computed per class on the whole volume with 3-D
surfaces (:func:`evaluation.metrics.volume_metrics`). The h5 files carry no voxel spacing, so
distances are in voxel units (slice steps, rows, columns), as SSL4MIS reports them. Differences:
the logits are resized bilinearly before the argmax (SSL4MIS zooms the argmax with order 0), and
images are the shared uint8 canvases (SSL4MIS zooms the float slice with order 0).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from dataloaders.h5 import VolumeDataset
from dataloaders.specs import DatasetSpec
from evaluation.metrics import region_masks, volume_metrics


def predict_volume(predictor, images: Tensor, native: tuple[int, int], batch_size: int) -> Tensor:
    """Class indices (D, H, W) int64 of one volume.

    Args:
        predictor: canvas images (B, Cin, S, S) float in [0, 1] -> logits (B, C+1, h, w).
        images: (D, Cin, S, S) float in [0, 1] on the device.
        native: (H, W) the volume's in-plane size; logits are resized to it (bilinear, fp32).
        batch_size: slices per forward.
    """
    preds = []
    for start in range(0, images.shape[0], batch_size):
        logits = predictor(images[start : start + batch_size]).float()
        logits = F.interpolate(logits, size=native, mode="bilinear", align_corners=False)
        preds.append(logits.argmax(dim=1))
    return torch.cat(preds)


def evaluate_volumes(
    predictors: Mapping,
    dataset: VolumeDataset,
    domain: str,
    spec: DatasetSpec,
    *,
    device: torch.device,
    batch_size: int,
    penalty: float,
    on_batch=None,
) -> dict[str, list[dict[str, Tensor]]]:
    """Per predictor, one metrics dict per volume: ``dice``, ``jaccard``, ``hd95``, ``asd``
    (1, R) float64 (voxel units for the distances), ``empty_pred``, ``empty_target`` (1, R) bool.

    ``on_batch(model, domain, payload)`` is called once per volume with ``images`` (D, Cin, H,
    W) float at the native size, ``pred`` / ``target`` (D, H, W) int64, ``indices`` (D,) the
    volume's index, ``names`` ``<case>_slice_<k>`` (k 1-based, as the slice files) and the
    volume's ``metrics``.
    """
    regions = [classes for _, classes in spec.eval_regions]
    collected: dict[str, list[dict[str, Tensor]]] = {name: [] for name in predictors}
    for index in range(len(dataset)):
        item = dataset[index]
        images = item["image"].to(device).float().div_(255)
        target = item["mask"].to(device).long()
        native = tuple(target.shape[1:])
        # (R, D, H, W): one "volume" per region, all regions in one metrics call.
        target_regions = region_masks(target, regions).transpose(0, 1).contiguous()
        for name, predictor in predictors.items():
            pred = predict_volume(predictor, images, native, batch_size)
            pred_regions = region_masks(pred, regions).transpose(0, 1).contiguous()
            metrics = volume_metrics(pred_regions, target_regions, penalty=penalty)
            metrics = {k: v[None] for k, v in metrics.items()}
            collected[name].append(metrics)
            if on_batch is not None:
                depth = pred.shape[0]
                payload = {
                    "images": F.interpolate(images, size=native, mode="bilinear"),
                    "pred": pred,
                    "target": target,
                    "indices": torch.full((depth,), index, dtype=torch.int64, device=device),
                    "names": [f"{item['name']}_slice_{k + 1}" for k in range(depth)],
                    "metrics": metrics,
                }
                on_batch(name, domain, payload)
    return collected
