"""Evaluate a saved run on every domain's test set.

    python test.py --run runs/prostate/<name>                       # last.pt, both students
    python test.py --run DIR --checkpoint best --model foundation
    python test.py --run DIR/checkpoints/best.pt                    # the same as --checkpoint best
    python test.py --run DIR --teachers --save_predictions --no_progress

DIR is a run folder written by train.py (config.yaml, train.log, checkpoints/last.pt and best.pt,
eval/, tb/). Prints the per-domain table (Dice per region, mean Dice, Jaccard, HD95, ASD; mean
over domains) and writes DIR/test_<checkpoint>.json and .csv, <checkpoint> being the file's stem
(last, best, ...). The models are rebuilt from the config stored in the checkpoint, then the
trained weights are loaded from it; a ViT foundation model needs its base weights file at the
recorded path (or give --foundation_checkpoint).

--save_predictions writes one PNG per test image and evaluated model:
DIR/predictions_<checkpoint>/<model>/<domain>/<image stem>.png, e.g.
predictions_best/unet/benign/benign (5).png for the test image benign/benign (5).png. Each PNG is
the predicted label map at the evaluation resolution, patch_size x patch_size (data.patch_size,
else the dataset's default; the resolution of the test masks and of the metrics), not the
image's native size: non-square images are stretched onto the square, as in training. Pixels are
8-bit gray, value = class index x (255 // C), C = number of foreground classes: 0/255 for one
class, 0/127/254 for two, 0/85/170/255 for three; the class index is value // (255 // C).
"""

from __future__ import annotations

import argparse
import logging
import sys

from dataloaders.datasets import DataError
from engine.checkpoint import CheckpointError
from engine.config import ConfigError
from engine.evaluate_run import evaluate_run, load_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        required=True,
        help="run folder written by train.py (or one of its checkpoints/*.pt files)",
    )
    parser.add_argument(
        "--checkpoint", help="last (default) | best | a path to a .pt file (outputs go to --run)"
    )
    parser.add_argument("--model", default="both", choices=["both", "unet", "foundation"])
    parser.add_argument("--teachers", action="store_true", help="also evaluate the EMA teachers")
    parser.add_argument("--root", help="dataset root (default: the one recorded in the run)")
    parser.add_argument("--foundation_checkpoint", help="base weights of a ViT foundation model")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch_size", type=int, help="test images per forward")
    parser.add_argument(
        "--save_predictions",
        action="store_true",
        help="write each predicted label map as DIR/predictions_<checkpoint>/<model>/<domain>/"
        "<image stem>.png: patch_size x patch_size (the evaluation resolution, not the native "
        "size), 8-bit gray, value = class index x (255 // C) for C foreground classes",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        loaded = load_run(
            args.run, args.checkpoint, root=args.root,
            foundation_checkpoint=args.foundation_checkpoint, device=args.device,
        )  # fmt: skip
        evaluate_run(
            loaded, model=args.model, teachers=args.teachers, batch_size=args.batch_size,
            save_predictions=args.save_predictions, progress=not args.no_progress,
        )  # fmt: skip
    except (CheckpointError, ConfigError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
