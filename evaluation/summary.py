"""Aggregation of per-slice (or per-volume) metrics into the result tables of
:func:`evaluation.evaluate.evaluate`: per domain and region, then the unweighted mean over
domains and the mean over regions (the layout is in that module's docstring)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

METRICS = ("dice", "jaccard", "hd95", "asd")
COUNTS = ("n", "empty_target", "empty_pred", "both_empty", "one_empty", "missed", "false_positive")


def per_item_metrics(
    values: dict[str, Tensor], names: list[str], region_names: tuple[str, ...]
) -> dict:
    """{item name: {region: {metric: float}}} of (n, R) metric tensors (one read-back)."""
    host = {k: values[k].tolist() for k in METRICS}
    return {
        item: {r: {k: float(host[k][i][j]) for k in METRICS} for j, r in enumerate(region_names)}
        for i, item in enumerate(names)
    }


def domain_summary(values: dict[str, Tensor], region_names: tuple[str, ...]) -> dict:
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


def overall_summary(domains: dict[str, dict]) -> dict:
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
