"""Per-domain, per-region evaluation tables, shared by training and ``test.py``.

Every predictor sees the same batches (each test image is loaded and moved to the device once
for all models). Metrics are computed per slice at patch resolution by :mod:`utils.metrics`
and aggregated as the reference's evaluation (``test()`` in its ``train.py``) does for the
paper's tables. A :class:`~dataloaders.h5.VolumeDataset` domain (ACDC) is evaluated per volume
instead (:mod:`utils.volumes`: 3-D metrics at native size, voxel units); "slice" then reads
"volume" below, and its domain entry also holds ``"volumes": {name: {region: {metric}}}``:

- per domain and region: the mean over slices (nan-mean for hd95/asd, whose value is undefined
  when prediction and target are both empty; NaN if undefined for every slice);
- per region overall: the UNWEIGHTED mean of the domain values (a small domain counts as much
  as a large one), skipping NaN;
- ``mean``: the mean over regions of those values, skipping NaN.

The empty-mask policy is that of :mod:`utils.metrics`; the counts of empty targets, empty
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

import csv
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dataloaders.h5 import VolumeDataset
from dataloaders.specs import DatasetSpec
from utils.metrics import region_masks, slice_metrics
from utils.volumes import evaluate_volumes

logger = logging.getLogger(__name__)

# images (B, Cin, Sc, Sc) float in [0, 1] on the device -> logits (B, C+1, h, w), any h, w.
Predictor = Callable[[Tensor], Tensor]
# on_batch(model name, domain folder name, payload); see :func:`evaluate`.
BatchCallback = Callable[[str, str, dict], None]

METRICS = ("dice", "jaccard", "hd95", "asd")
COUNTS = ("n", "empty_target", "empty_pred", "both_empty", "one_empty", "missed", "false_positive")


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
        volumes = dataset.names if isinstance(dataset, VolumeDataset) else None
        if volumes is not None:
            collected = evaluate_volumes(
                predictors,
                dataset,
                domain,
                spec,
                device=device,
                batch_size=batch_size,
                penalty=penalty,
                on_batch=on_batch,
            )
        else:
            loader = _loader(dataset, domain, batch_size, num_workers, device, progress)
            collected = _evaluate_slices(
                predictors, loader, dataset, domain, spec, patch_size, device, penalty, on_batch
            )
        for name, batches in collected.items():
            values = {k: torch.cat([m[k] for m in batches]) for k in batches[0]}
            summary = _domain_summary(values, spec.region_names)
            if volumes is not None:
                summary["volumes"] = _per_item(values, volumes, spec.region_names)
            per_model[name][domain] = summary
        logger.debug("evaluated %d %s items of %s", len(dataset), spec.name, domain)
    return {
        name: {"penalty": float(penalty), "domains": domains, "mean": _overall(domains)}
        for name, domains in per_model.items()
    }


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


def _per_item(values: dict[str, Tensor], names: list[str], region_names: tuple[str, ...]) -> dict:
    """{item name: {region: {metric: float}}} of (n, R) metric tensors (one read-back)."""
    host = {k: values[k].tolist() for k in METRICS}
    return {
        item: {r: {k: float(host[k][i][j]) for k in METRICS} for j, r in enumerate(region_names)}
        for i, item in enumerate(names)
    }


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


def _domain_summary(values: dict[str, Tensor], region_names: tuple[str, ...]) -> dict:
    """Aggregate the per-slice (n, R) tensors of one domain into floats and int counts."""
    means = {k: values[k].nanmean(0) for k in METRICS}  # Dice/Jaccard are never NaN
    ep, et = values["empty_pred"], values["empty_target"]
    n = ep.shape[0]
    counts = {
        "empty_target": et.sum(0),
        "empty_pred": ep.sum(0),
        "both_empty": (ep & et).sum(0),
        "one_empty": (ep ^ et).sum(0),
        "missed": (ep & ~et).sum(0),
        "false_positive": (~ep & et).sum(0),
    }
    # One read-back per metric per domain; evaluation is allowed to synchronise.
    means_host = {k: v.tolist() for k, v in means.items()}
    counts_host = {k: v.tolist() for k, v in counts.items()}
    regions = {
        region: {
            **{k: float(means_host[k][r]) for k in METRICS},
            "counts": {"n": n, **{k: int(counts_host[k][r]) for k in COUNTS[1:]}},
        }
        for r, region in enumerate(region_names)
    }
    return {"n": n, "regions": regions, "mean": _mean_over(regions.values())}


def _overall(domains: dict[str, dict]) -> dict:
    """Unweighted mean over domains per region, and the mean over regions."""
    first = next(iter(domains.values()))
    regions = {}
    for region in first["regions"]:
        per_domain = [d["regions"][region] for d in domains.values()]
        regions[region] = {
            **_mean_over(per_domain),
            "counts": {k: sum(v["counts"][k] for v in per_domain) for k in COUNTS},
        }
    n = sum(d["n"] for d in domains.values())
    return {"n": n, "regions": regions, "mean": _mean_over(regions.values())}


def _mean_over(items: Any) -> dict[str, float]:
    """Per metric, the mean over ``items`` (dicts with the metric keys), skipping NaN."""
    items = list(items)
    return {k: _nanmean([item[k] for item in items]) for k in METRICS}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def to_json_ready(results: Any) -> Any:
    """A copy of ``results`` with NaN / infinite floats replaced by None (strict JSON)."""
    if isinstance(results, Mapping):
        return {str(k): to_json_ready(v) for k, v in results.items()}
    if isinstance(results, list | tuple):
        return [to_json_ready(v) for v in results]
    if isinstance(results, float) and not math.isfinite(results):
        return None
    return results


def format_table(results: Mapping[str, dict], spec: DatasetSpec) -> str:
    """Readable per-model tables: rows = domains + ``mean`` (unweighted over domains); columns =
    Dice per region (x100), mean Dice (x100, with several regions), then Jaccard (x100), HD95
    and ASD (pixels) averaged over regions; a footnote gives the empty-mask counts.

    Accepts the output of :func:`evaluate` or its :func:`to_json_ready` form (None = NaN).
    """
    return "\n\n".join(_model_table(name, result, spec) for name, result in results.items())


def format_class_table(results: Mapping[str, dict]) -> str:
    """Per model, an SSL4MIS-style table: one row per class and ``mean``, columns Dice and
    Jaccard (x100), HD95 and ASD (voxels), averaged over volumes (then over domains)."""
    blocks = []
    for model, result in results.items():
        rows = [["class", "Dice", "Jaccard", "HD95 (vox)", "ASD (vox)"]]
        table = result["mean"]
        items = [*table["regions"].items(), ("mean", table["mean"])]
        for region, values in items:
            rows.append([region, *(_number(values[k], s) for k, s in _CLASS_COLUMNS)])
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
            for r in rows
        ]
        volumes = table["n"]
        blocks.append("\n".join([f"{model} (per volume, mean over {volumes} volumes):", *lines]))
    return "\n\n".join(blocks)


# (metric, scale) of the per-class table: Dice and Jaccard x100, distances as they are.
_CLASS_COLUMNS = (("dice", 100.0), ("jaccard", 100.0), ("hd95", 1.0), ("asd", 1.0))


def _model_table(name: str, result: dict, spec: DatasetSpec) -> str:
    regions = list(result["mean"]["regions"])
    header = ["domain", *(f"Dice {r}" for r in regions)]
    header += ["Dice mean"] if len(regions) > 1 else []
    header += ["Jaccard", "HD95", "ASD"]
    rows = [
        [_title(spec, domain), *_cells(values, regions)]
        for domain, values in result["domains"].items()
    ]
    rows.append(["mean", *_cells(result["mean"], regions)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([f"{name}:", *lines, *_footnote(result, regions, spec)])


def _cells(values: dict, regions: list[str]) -> list[str]:
    cells = [_number(values["regions"][r]["dice"], 100) for r in regions]
    mean = values["mean"]
    cells += [_number(mean["dice"], 100)] if len(regions) > 1 else []
    return cells + [_number(mean["jaccard"], 100), _number(mean["hd95"]), _number(mean["asd"])]


def _number(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * scale:.2f}"


def _title(spec: DatasetSpec, domain: str) -> str:
    if domain not in spec.domains:
        return domain
    title = spec.domain_titles[spec.domains.index(domain)]
    return domain if title == domain else f"{domain} ({title})"


def _footnote(result: dict, regions: list[str], spec: DatasetSpec) -> list[str]:
    items, unit = ("volumes", "voxels") if spec.eval_unit == "volume" else ("slices", "px")
    penalty = result.get("penalty")
    penalty_text = "the penalty" if penalty is None else f"{penalty:g} {unit}"
    lines = []
    for region in regions:
        c = result["mean"]["regions"][region]["counts"]
        lines.append(
            f"  {region}: {c['n']} {items}; empty: {c['empty_target']} targets, "
            f"{c['empty_pred']} predictions; both empty {c['both_empty']} (Dice 1, HD95/ASD "
            f"skipped); missed {c['missed']}, false positive {c['false_positive']} (Dice 0, "
            f"HD95/ASD {penalty_text})"
        )
    return ["empty masks, all domains:", *lines]


def results_to_csv(results: Mapping[str, dict], path: str | Path) -> None:
    """Write one row per model / domain / region (domain ``mean`` = unweighted over domains,
    region ``mean`` = over regions) with the four metrics and the counts; NaN/None -> empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "domain", "region", *METRICS, *COUNTS])
        for model, result in results.items():
            tables = [*result["domains"].items(), ("mean", result["mean"])]
            for domain, table in tables:
                for region, values in [*table["regions"].items(), ("mean", table["mean"])]:
                    counts = values.get("counts", {"n": table.get("n", "")})
                    writer.writerow(
                        [model, domain, region]
                        + ["" if _missing(values[k]) else repr(float(values[k])) for k in METRICS]
                        + [counts.get(k, "") for k in COUNTS]
                    )


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)
