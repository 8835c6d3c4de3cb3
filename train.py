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
import logging
import re
import sys
from pathlib import Path

from dataloaders.datasets import DataError
from dataloaders.specs import get_spec
from utils.checkpoint import CheckpointError, ensure_writable
from utils.config import (
    Config,
    ConfigError,
    check_resumable,
    load_config,
    parse_override,
    resumable,
    save_config,
)
from utils.logging import setup_logging
from utils.synfoc import validate_method
from utils.trainer import DivergedError, Trainer

logger = logging.getLogger("train")

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


# Settings the default run name already shows; resumable ones (paths, cadence, eval) get no
# suffix either, since they do not define the experiment.
_NAMED_KEYS = (
    "data.dataset",
    "data.lb_domain",
    "data.lb_num",
    "data.setting",
    "model.foundation",
    "method.students",
    "method.supervised_only",
    "train.seed",
)


def default_run_name(config: Config, overrides: list[str] = ()) -> str:
    """E.g. ``synfoc_both_litemedsam_d1_n20_s1337`` (method, students, foundation, labels, seed),
    then one ``_<key>-<value>`` per other ``--set`` override (``..._alpha-self``), so that an
    ablation never lands in, and resumes, the folder of another run."""
    method, data = config.method, config.data
    kind = "suponly" if method.supervised_only else "synfoc"
    foundation = config.model.foundation if method.students != "unet" else "none"
    labels = f"d{data.lb_domain}_n{'all' if data.lb_num is None else data.lb_num}"
    name = f"{kind}_{method.students}_{foundation}_{labels}_s{config.train.seed}"
    if data.setting != "midss":  # a uda run never shares a folder with its midss twin
        name = f"{data.setting}_{name}"
    suffixes: dict[str, str] = {}  # key -> suffix; a repeated key keeps its last value
    for text in overrides:
        section, key, _ = parse_override(text)
        dotted = f"{section}.{key}"
        if dotted not in _NAMED_KEYS and not resumable(dotted):
            value = re.sub(r"[^A-Za-z0-9.+-]+", "-", text.split("=", 1)[1]).strip("-")
            suffixes[dotted] = f"{key}-{value}"
    return "_".join([name, *suffixes.values()])


def overrides_of(args: argparse.Namespace) -> list[str]:
    """``section.key=value`` overrides from the common flags, then from --set."""
    flags = [f"{FLAGS[f]}={getattr(args, f)}" for f in FLAGS if getattr(args, f) is not None]
    return flags + args.set


def resolve_config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The run's config and folder; on --resume the run's saved config.yaml is the base."""
    overrides = overrides_of(args)
    if args.resume:  # an explicit run folder: its saved config, plus any overrides
        run_dir = Path(args.resume)
        return load_config(run_dir / "config.yaml", overrides), run_dir
    if args.config is None:
        raise ConfigError("give --config FILE (or --resume RUN_DIR)")
    config = load_config(args.config, overrides)
    config.train.name = config.train.name or default_run_name(config, args.set)
    run_dir = Path(config.train.out or Path("runs") / config.data.dataset / config.train.name)
    config.train.out = str(run_dir)
    return config, run_dir


def check_config(config: Config) -> None:
    """Fail before any heavy work on a config whose choices are invalid."""
    try:
        get_spec(config.data.dataset)
        validate_method(config.method)
    except (KeyError, ValueError) as error:
        raise ConfigError(error.args[0]) from None


def warn_schedule_change(saved: Config, config: Config) -> None:
    """Say that a resumed run changes length; its schedules keep their own horizons."""
    old, new = saved.train.max_iterations, config.train.max_iterations
    if old != new:
        logger.info(
            "train.max_iterations %s -> %s: lambda(t) and the lr schedules keep their horizons "
            "(method.ramp_iterations, optim.foundation_schedule_iterations): extending the "
            "run does not change them",
            old,
            new,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    resume = args.resume is not None
    try:
        config, run_dir = resolve_config(args)
        check_config(config)
        last = run_dir / "checkpoints" / "last.pt"
        resume = resume or (args.auto_resume and last.is_file())
        if resume and not last.is_file():
            raise CheckpointError(f"--resume: {last} does not exist")
        if not resume and last.is_file():
            raise ConfigError(
                f"{run_dir} already holds a run; use --resume {run_dir} or another --out"
            )
        saved = load_config(run_dir / "config.yaml") if resume else config
        check_resumable(saved, config)
        ensure_writable(run_dir, "train.py writes its logs and checkpoints there")
        setup_logging(run_dir / "train.log")
        logger.info("command: %s", " ".join(sys.argv))
        warn_schedule_change(saved, config)
        save_config(config, run_dir / "config.yaml")
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
