"""Data check: ``python -m dataloaders --dataset NAME --root DIR [options]``.

Finds, pairs and decodes every file of the dataset the way training will, then prints a
per-domain table (train/test/labeled/unlabeled counts, native image sizes, class pixel fractions,
masks without foreground) and warnings. Bad input exits with status 2 and one line on stderr that
names the file or key and what was expected. Run it before a long training job.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dataloaders.datasets import DataError, scan_split
from dataloaders.settings import SETTINGS
from dataloaders.specs import DATASETS, get_spec
from dataloaders.split_report import describe_splits
from dataloaders.splits import build_splits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dataloaders", description="Check a dataset folder before training."
    )
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--root", required=True, help="folder holding the native layout")
    parser.add_argument("--lb_domain", default="1", help="1-based index or name (default 1)")
    parser.add_argument(
        "--lb_num",
        type=int,
        default=None,
        help="labeled images, or patients for ACDC-like specs (default min(20, domain size); "
        "the smallest patient count of the spec's table)",
    )
    parser.add_argument(
        "--setting", default="midss", choices=SETTINGS, help="domains preset (docs/DATA.md)"
    )
    parser.add_argument(
        "--unlabeled_domains", nargs="+", help="override the unlabeled stream's domains"
    )
    parser.add_argument("--eval_domains", nargs="+", help="override the tested domains")
    parser.add_argument(
        "--label_all", action="store_true", help="label every train file (lb_num null, as uda)"
    )
    parser.add_argument("--lb_seed", type=int, default=None, help="random labeled pick")
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.0,
        help="share of each domain's train files held out for validation (data.val_fraction)",
    )
    parser.add_argument(
        "--labeled_bs",
        type=int,
        default=None,
        help="batch size to check: lb_num and the unlabeled set must each hold a batch",
    )
    parser.add_argument(
        "--canvas_size", type=int, default=None, help="decode size (default: the patch size)"
    )
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    """The report for ``args``; raises DataError, KeyError or ValueError on bad input."""
    spec = get_spec(args.dataset)
    lb = spec.domain_index(args.lb_domain)
    lb_num = None if args.label_all else args.lb_num
    if lb_num is None and not args.label_all:
        lb_num = max(1, min(20, len(scan_split(spec, args.root, lb, "train"))))
        if spec.labeled_unit == "patients":
            lb_num = min(dict(spec.patient_slices))
    canvas = args.canvas_size or spec.patch_size
    splits = build_splits(
        spec,
        args.root,
        lb + 1,
        lb_num,
        canvas_size=canvas,
        patch_size=spec.patch_size,
        lb_seed=args.lb_seed,
        val_fraction=args.val_fraction,
        setting=args.setting,
        unlabeled_domains=args.unlabeled_domains,
        eval_domains=args.eval_domains,
        labeled_bs=args.labeled_bs,
        # Copy-paste pairs labeled and unlabeled samples, so both batches have this size.
        unlabeled_bs=args.labeled_bs,
        # Bars only on a terminal, so a failing run's stderr is the one error line.
        progress=sys.stderr.isatty() and not args.no_progress,
        num_workers=args.workers,
    )
    pick = "the first in sorted order"
    if spec.split_lists:
        pick = f"the first lines of {dict(spec.split_lists)['train']}"
    if args.lb_seed is not None:
        pick = f"random draw, seed {args.lb_seed}"
    count = f"{len(splits.labeled)} images"
    if lb_num is not None and spec.labeled_unit == "patients":
        count = f"{lb_num} patients = {len(splits.labeled)} slices"
    test_note = f"test masks at {spec.patch_size}"
    if spec.eval_unit == "volume":
        test_note = "val/test: whole volumes at native size"
    classes = " ".join(f"{i + 1}={n}" for i, n in enumerate(spec.class_names))
    lines = [
        f"dataset {spec.name} at {args.root}",
        f"setting {args.setting}; labeled: {count} of {spec.domains[lb]} ({pick})",
        f"decoded at canvas {canvas}, {test_note}; classes 0=background {classes}",
        "image sizes: native W x H; class %: mean per-image pixel share over train and test;",
        "empty: masks without any foreground pixel",
        "",
        describe_splits(splits, spec),
    ]
    if args.labeled_bs is None:
        lines.append("note: labeled batch size not checked (pass --labeled_bs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The table already lists count warnings; keep the log quiet so stderr stays one line.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(args)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
