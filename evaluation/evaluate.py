"""Evaluation of predictors over the test (or validation) sets of every domain, shared by
training and ``test.py``.

Every predictor sees the same batches (each test image is loaded and moved to the device once
for all models). Metrics are computed per slice at patch resolution by :mod:`evaluation.metrics`
and aggregated as the reference's evaluation (``test()`` in its ``train.py``) does for the
paper's tables. A :class:`~dataloaders.h5.VolumeDataset` domain (ACDC) is evaluated per volume
instead (:mod:`evaluation.volumes`: 3-D metrics at native size, voxel units); "slice" then reads
"volume" below, and its domain entry also holds ``"volumes": {name: {region: {metric}}}``:

- per domain and region: the mean over slices (nan-mean for hd95/asd, whose value is undefined
  when prediction and target are both empty; NaN if undefined for every slice);
- per region overall: the UNWEIGHTED mean of the domain values (a small domain counts as much
  as a large one), skipping NaN;
- ``mean``: the mean over regions of those values, skipping NaN.

The empty-mask policy is that of :mod:`evaluation.metrics`; the counts of empty targets, empty
predictions, both empty, missed structures and false positives are reported with every value.

Result layout (per predictor name; JSON-ready after :func:`to_json_ready`)::

    {"penalty": float,
     "domains": {domain: {"n": int,
                          "regions": {region: {"dice", "jaccard", "hd95", "asd": float,
                                               "counts": {...}}},
                          "mean": {"dice", "jaccard", "hd95", "asd": float}}},
     "mean": {"n": int,
              "regions": {region: {"dice", "jaccard", "hd95", "asd": float, "counts": {...}}},
              "mean": {"dice", "jaccard", "hd95", "asd": float}}}

Counts are ints: ``n``, ``empty_target``, ``empty_pred``, ``both_empty``, ``one_empty``
(= ``missed`` + ``false_positive``), ``missed``, ``false_positive``. Dice and Jaccard are
fractions in [0, 1] (tables print them x100); hd95 and asd are in pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dataloaders.h5 import VolumeDataset
from dataloaders.specs import DatasetSpec
from evaluation.metrics import region_masks, slice_metrics
from evaluation.summary import domain_summary, overall_summary, per_item_metrics
from evaluation.volumes import evaluate_volumes

logger = logging.getLogger(__name__)

# images (B, Cin, Sc, Sc) float in [0, 1] on the device -> logits (B, C+1, h, w), any h, w.
Predictor = Callable[[Tensor], Tensor]
# on_batch(model name, domain folder name, payload); see :func:`evaluate`.
BatchCallback = Callable[[str, str, dict], None]


@torch.no_grad()
def evaluate(
    predictors: Mapping[str, Predictor],
    test_sets: Mapping[str, Dataset],
    spec: DatasetSpec,
    *,
    patch_size: int,
    device: torch.device | str,
    batch_size: int = 16,
    penalty: float = 100.0,
    on_batch: BatchCallback | None = None,
    progress: bool = False,
    num_workers: int = 0,
) -> dict[str, dict]:
    """Evaluate every predictor on every domain's test set in one pass over the data.

    Args:
        predictors: model name -> :data:`Predictor` (the caller sets eval mode and autocast).
        test_sets: domain folder name (one of ``spec.domains``) -> dataset whose items are
            ``{"image": uint8 (Cin, Sc, Sc), "mask": uint8 (p, p) class indices, "domain",
            "index": int}`` (optionally ``"name": str``).
        spec: the dataset's spec (regions, class count, channels).
        patch_size: p, the resolution of the masks and of the metrics; logits of another size
            are upsampled bilinearly to p x p before the argmax.
        device: where images, predictions and metrics live.
        penalty: hd95/asd in pixels when exactly one of prediction and target is empty.
        on_batch: called per model per batch with device tensors (the caller copies what it
            keeps): ``images`` (B, Cin, Sc, Sc) float in [0, 1], ``pred`` and ``target``
            (B, p, p) int64 class indices, ``indices`` (B,) int64 dataset indices, ``names``
            (B strings: the items' ``name``, else the dataset's ``names`` / ``samples.names``,
            else the index), ``metrics`` {dice, jaccard, hd95, asd: (B, R) float64,
            empty_pred, empty_target: (B, R) bool}.
        progress: show a tqdm bar per domain.
        num_workers: DataLoader workers (0: load in this process; right for cached tensors).

    Returns:
        Per model name, the nested dict described in the module docstring.
    """
    if not predictors or not test_sets:
        raise ValueError(
            f"evaluate: need at least one predictor and one test set, got {len(predictors)} "
            f"and {len(test_sets)}"
        )
    device = torch.device(device)
    per_model: dict[str, dict[str, dict]] = {name: {} for name in predictors}
    for domain, dataset in test_sets.items():
        _check_domain(dataset, domain, spec)
        options = dict(batch_size=batch_size, penalty=penalty, on_batch=on_batch)
        if isinstance(dataset, VolumeDataset):
            collected = evaluate_volumes(
                predictors, dataset, domain, spec, device=device, **options
            )
        else:
            loader = _loader(dataset, domain, batch_size, num_workers, device, progress)
            collected = _evaluate_slices(
                predictors, loader, dataset, domain, spec, patch_size, device, penalty, on_batch
            )
        for name, batches in collected.items():
            per_model[name][domain] = _summarise_domain(batches, dataset, spec)
        logger.debug("evaluated %d %s items of %s", len(dataset), spec.name, domain)
    return {name: _model_results(domains, penalty) for name, domains in per_model.items()}


def _model_results(domains: dict[str, dict], penalty: float) -> dict:
    """One predictor's results from its per-domain entries: the penalty, the domains and their
    unweighted mean (the layout of the module docstring)."""
    return {"penalty": float(penalty), "domains": domains, "mean": overall_summary(domains)}


def _summarise_domain(
    batches: list[dict[str, Tensor]], dataset: Dataset, spec: DatasetSpec
) -> dict:
    """One domain's entry of the results from its batches' (B, R) metrics; with a volume's
    names, also the metrics per volume."""
    values = {k: torch.cat([m[k] for m in batches]) for k in batches[0]}
    summary = domain_summary(values, spec.region_names)
    if isinstance(dataset, VolumeDataset):
        summary["volumes"] = per_item_metrics(values, dataset.names, spec.region_names)
    return summary


def _evaluate_slices(
    predictors: Mapping[str, Predictor],
    loader: Iterable[dict],
    dataset: Dataset,
    domain: str,
    spec: DatasetSpec,
    patch_size: int,
    device: torch.device,
    penalty: float,
    on_batch: BatchCallback | None,
) -> dict[str, list[dict[str, Tensor]]]:
    """Per predictor, the per-slice metrics of every batch of one domain (see :func:`evaluate`)."""
    regions = [classes for _, classes in spec.eval_regions]
    collected: dict[str, list[dict[str, Tensor]]] = {name: [] for name in predictors}
    for batch in loader:
        images, target = _batch_to_device(batch, domain, spec, patch_size, device)
        target_regions = region_masks(target, regions)
        for name, predictor in predictors.items():
            pred = _predict(predictor, images, name, spec, patch_size)
            metrics = _region_metrics(region_masks(pred, regions), target_regions, penalty)
            collected[name].append(metrics)
            if on_batch is not None:
                payload = {
                    "images": images,
                    "pred": pred,
                    "target": target,
                    "indices": torch.as_tensor(batch["index"]).long().to(device),
                    "names": _names(dataset, batch),
                    "metrics": metrics,
                }
                on_batch(name, domain, payload)
    return collected


def _check_domain(dataset: Dataset, domain: str, spec: DatasetSpec) -> None:
    if domain not in spec.domains:
        raise ValueError(
            f"evaluate: unknown {spec.name} domain {domain!r}; expected one of "
            f"{', '.join(spec.domains)}"
        )
    if len(dataset) == 0:
        raise ValueError(f"evaluate: the {spec.name} test set of domain {domain!r} is empty")


def _loader(
    dataset: Dataset,
    domain: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    progress: bool,
) -> Iterable[dict]:
    """The domain's batches in dataset order (with a bar on request)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    if not progress:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"eval {domain}", unit="batch", leave=False)


def _region_metrics(pred: Tensor, target: Tensor, penalty: float) -> dict[str, Tensor]:
    """slice_metrics of (B, R, p, p) region masks, as (B, R) tensors; all regions in one call."""
    b, r = pred.shape[:2]
    metrics = slice_metrics(pred.flatten(0, 1), target.flatten(0, 1), penalty=penalty)
    return {k: v.view(b, r) for k, v in metrics.items()}


def _batch_to_device(
    batch: dict, domain: str, spec: DatasetSpec, patch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Checks a collated batch and returns images (B, Cin, Sc, Sc) float in [0, 1] and masks
    (B, p, p) int64 on ``device``."""
    image, mask = batch["image"], batch["mask"]
    if image.dtype != torch.uint8 or image.dim() != 4 or image.shape[1] != spec.in_channels:
        raise ValueError(
            f"evaluate: domain {domain!r}: images must be uint8 (B, {spec.in_channels}, S, S), "
            f"got {tuple(image.shape)} {image.dtype}"
        )
    if mask.dim() != 3 or tuple(mask.shape[1:]) != (patch_size, patch_size):
        raise ValueError(
            f"evaluate: domain {domain!r}: masks must be (B, {patch_size}, {patch_size}) "
            f"(patch_size), got {tuple(mask.shape)}"
        )
    # Checked on the host copy: out-of-range classes would silently fall outside every region.
    if mask.is_floating_point() or int(mask.max()) > spec.num_classes or int(mask.min()) < 0:
        raise ValueError(
            f"evaluate: domain {domain!r}: masks must hold class indices 0..{spec.num_classes}, "
            f"got {mask.dtype} values {int(mask.min())}..{int(mask.max())}"
        )
    images = image.to(device, non_blocking=True).float().div_(255)
    return images, mask.to(device, non_blocking=True).long()


def _predict(
    predictor: Predictor, images: Tensor, name: str, spec: DatasetSpec, patch_size: int
) -> Tensor:
    """Class-index map (B, p, p) int64 of one predictor."""
    logits = predictor(images)
    expected = spec.num_classes + 1
    if logits.dim() != 4 or logits.shape[0] != images.shape[0] or logits.shape[1] != expected:
        raise ValueError(
            f"evaluate: predictor {name!r} returned {tuple(logits.shape)}; expected logits "
            f"({images.shape[0]}, {expected}, h, w)"
        )
    # fp32 before resizing: bf16 logits under autocast would make near-ties flip the argmax.
    logits = logits.float()
    if logits.shape[-2:] != (patch_size, patch_size):
        logits = F.interpolate(
            logits, size=(patch_size, patch_size), mode="bilinear", align_corners=False
        )
    return logits.argmax(dim=1)


def _names(dataset: Dataset, batch: dict) -> list[str]:
    if "name" in batch:
        return [str(n) for n in batch["name"]]
    indices = [int(i) for i in batch["index"]]
    names = getattr(dataset, "names", None) or getattr(
        getattr(dataset, "samples", None), "names", None
    )
    if names is None:
        return [str(i) for i in indices]
    return [str(names[i]) for i in indices]
