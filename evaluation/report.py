"""Result tables as text (per domain, and per class for volumes), CSV and strict JSON."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dataloaders.specs import DatasetSpec
from evaluation.summary import COUNTS, METRICS


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
