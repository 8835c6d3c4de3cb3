"""Train SynFoC (or one of its ablations / baselines) from a config.

    python train.py --config configs/prostate.yaml --root ../data/ProstateSlice --lb_domain 1
    python train.py --config configs/demo.yaml --set method.alpha=self --set train.seed=2
    python train.py --resume runs/prostate/<name>          # continue a killed run

The run folder receives config.yaml, train.log, tb/, checkpoints/{last,best}.pt and
eval/<step>.json (see README, "Runs"). Exit status: 0 done, 2 bad input (config, data,
checkpoint, run folder), 3 the run diverged (a non-finite loss or weight; nothing of it was
saved); both errors are one line on stderr (docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import sys

from dataloaders.datasets import DataError
from engine.checkpoint import CheckpointError
from engine.config import ConfigError
from engine.guards import DivergedError
from engine.runs import check_config, prepare_run_folder, resolve_config, resumes
from engine.trainer import Trainer

# Common flags and the config keys they set (each is also reachable with --set).
FLAGS = {
    "dataset": "data.dataset",
    "root": "data.root",
    "lb_domain": "data.lb_domain",
    "lb_num": "data.lb_num",
    "foundation": "model.foundation",
    "checkpoint": "model.checkpoint",
    "max_iterations": "train.max_iterations",
    "out": "train.out",
    "device": "train.device",
    "seed": "train.seed",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML experiment config (configs/<name>.yaml)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key (repeatable)",
    )
    for flag, key in FLAGS.items():
        parser.add_argument(f"--{flag}", help=f"sets {key}")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_DIR",
        help="continue from RUN_DIR/checkpoints/last.pt (default RUN_DIR: the config's)",
    )
    parser.add_argument(
        "--auto_resume",
        action="store_true",
        help="resume if the run folder already holds a run, else start it",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """``section.key=value`` overrides from the common flags, then from --set."""
    flags = [f"{FLAGS[f]}={getattr(args, f)}" for f in FLAGS if getattr(args, f) is not None]
    return flags + args.set


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, run_dir = resolve_config(args.config, overrides_of(args), args.set, args.resume)
        check_config(config)
        resume = resumes(run_dir, args.resume is not None, args.auto_resume)
        prepare_run_folder(config, run_dir, resume)
        Trainer(config, run_dir, resume=resume, progress=not args.no_progress).fit()
    except (ConfigError, CheckpointError, DataError, FileNotFoundError) as error:
        # Bad input: one line, no traceback. Anything else is a bug and keeps its traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DivergedError as error:  # a non-finite loss or weight; nothing of it was saved
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
