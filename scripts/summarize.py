"""Turn a set of runs into the paper's table layout, as Markdown and CSV.

    python scripts/summarize.py runs/busi/*                       # one row per run and model
    python scripts/summarize.py runs/prostate/* --by_labeled_domain   # Tables 3-5 layout
    python scripts/summarize.py runs/busi/* --out docs/busi_table  # writes .md and .csv

Each run contributes its ``test_<checkpoint>.json`` (from ``python test.py --run DIR``) when it
exists, otherwise its latest ``eval/<step>.json`` (marked in the source column when that holds
validation-split results, i.e. the run used ``data.val_fraction``).

Default layout (paper Table 6): one row per run and model with the Dice of every test domain
(mean over the dataset's regions), then mean Dice, Jaccard, 95HD and ASD averaged over domains.
With ``--by_labeled_domain`` (Tables 3-5): one row per method and model, one column per labeled
domain holding the mean Dice over all test domains, and their average.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

DEFAULTS = {"alpha": "smc", "consistency": "cdcr", "copy_paste": True}


def method_label(config: dict[str, Any]) -> str:
    """SupOnly, Base-<model>, or SynFoC with its non-default ablation switches."""
    method = config["method"]
    if method["supervised_only"]:
        return "SupOnly"
    if method["students"] != "both":
        return f"Base-{method['students']}"
    changed = [f"{k}={method[k]}" for k, v in DEFAULTS.items() if method[k] != v]
    return "SynFoC" + (f" [{', '.join(changed)}]" if changed else "")


def model_label(model: str, config: dict[str, Any]) -> str:
    if model.startswith("unet"):
        return "U-Net" + model[len("unet") :]
    return config["model"]["foundation"] + model[len("foundation") :]


def load_run(run_dir: Path, checkpoint: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(config, results, source) of one run folder."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    test_file = run_dir / f"test_{checkpoint}.json"
    if test_file.is_file():
        return config, json.loads(test_file.read_text())["results"], test_file.name
    evals = sorted((run_dir / "eval").glob("*.json"), key=lambda p: int(p.stem))
    if not evals:
        raise FileNotFoundError(f"{run_dir}: no test_{checkpoint}.json and no eval/<step>.json")
    latest = json.loads(evals[-1].read_text())
    split = latest.get("split", "test")  # runs with data.val_fraction > 0 evaluate on "val"
    source = f"eval/{evals[-1].name}" + ("" if split == "test" else f" ({split} split)")
    return config, latest["results"], source


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def per_run_rows(runs: list[tuple[Path, dict, dict, str]]) -> tuple[list[str], list[list[str]]]:
    """Paper Table 6 layout: one row per run and model."""
    domains = list(next(iter(runs[0][2].values()))["domains"])
    header = [
        "method",
        "model",
        "labeled",
        *[f"{d} Dice" for d in domains],
        "mean Dice",
        "Jaccard",
        "95HD",
        "ASD",
        "source",
    ]
    rows = []
    for run_dir, config, results, source in runs:
        labeled = f"{config['data']['lb_domain']}/{config['data']['lb_num']}"
        for model, result in results.items():
            mean = result["mean"]["mean"]
            rows.append(
                [
                    method_label(config),
                    model_label(model, config),
                    labeled,
                    *[_fmt(result["domains"][d]["mean"]["dice"], 100) for d in domains],
                    _fmt(mean["dice"], 100),
                    _fmt(mean["jaccard"], 100),
                    _fmt(mean["hd95"]),
                    _fmt(mean["asd"]),
                    f"{run_dir.name}/{source}",
                ]
            )
    return header, rows


def by_labeled_domain_rows(
    runs: list[tuple[Path, dict, dict, str]],
) -> tuple[list[str], list[list[str]]]:
    """Paper Tables 3-5 layout: columns are labeled domains, values mean Dice over test domains."""
    table: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    labeled_domains: list[str] = []
    for _, config, results, _ in runs:
        domain = str(config["data"]["lb_domain"])
        labeled_domains += [domain] if domain not in labeled_domains else []
        for model, result in results.items():
            table[(method_label(config), model_label(model, config))][domain] = result["mean"][
                "mean"
            ]["dice"]
    header = ["method", "model", *[f"labeled {d}" for d in labeled_domains], "average"]
    rows = []
    for (method, model), values in table.items():
        cells = [values.get(d) for d in labeled_domains]
        present = [v for v in cells if v is not None]
        average = sum(present) / len(present) if len(present) == len(cells) else None
        rows.append([method, model, *[_fmt(v, 100) for v in cells], _fmt(average, 100)])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--checkpoint", default="last", help="which test_<checkpoint>.json to read")
    parser.add_argument("--by_labeled_domain", action="store_true", help="paper Tables 3-5 layout")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv")
    args = parser.parse_args(argv)
    try:
        runs = [
            (d, *load_run(d, args.checkpoint)) for d in args.runs if (d / "config.yaml").is_file()
        ]
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not runs:
        print("error: none of the given folders holds a run (config.yaml)", file=sys.stderr)
        return 2
    header, rows = (by_labeled_domain_rows if args.by_labeled_domain else per_run_rows)(runs)
    text = markdown(header, rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        with args.out.with_suffix(".csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
