"""Run folders for ``train.py``: the run's config and name, whether it resumes, and what a run
folder must hold before the trainer starts (config.yaml, train.log)."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from dataloaders.specs import get_spec
from engine.checkpoint import CheckpointError, ensure_writable
from engine.config import (
    Config,
    ConfigError,
    check_resumable,
    load_config,
    parse_override,
    resumable,
    save_config,
)
from method.config import validate_method
from utils.logging import setup_logging

logger = logging.getLogger("train")

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


def resolve_config(
    config_file: str | None, overrides: list[str], named: list[str], resume: str | None
) -> tuple[Config, Path]:
    """The run's config and folder. ``overrides``: every ``section.key=value`` given;
    ``named``: those that name the run (``--set``); ``resume``: a run folder whose saved
    config.yaml is then the base ("" = the config's own folder)."""
    if resume:  # an explicit run folder: its saved config, plus any overrides
        run_dir = Path(resume)
        return load_config(run_dir / "config.yaml", overrides), run_dir
    if config_file is None:
        raise ConfigError("give --config FILE (or --resume RUN_DIR)")
    config = load_config(config_file, overrides)
    config.train.name = config.train.name or default_run_name(config, named)
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


def resumes(run_dir: Path, resume: bool, auto_resume: bool) -> bool:
    """Whether the run continues from ``run_dir/checkpoints/last.pt``.

    Raises:
        CheckpointError: --resume without a last.pt.
        ConfigError: a new run in a folder that already holds one.
    """
    last = run_dir / "checkpoints" / "last.pt"
    resume = resume or (auto_resume and last.is_file())
    if resume and not last.is_file():
        raise CheckpointError(f"--resume: {last} does not exist")
    if not resume and last.is_file():
        raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    return resume


def prepare_run_folder(config: Config, run_dir: Path, resume: bool) -> None:
    """Check that a resumed run keeps its settings, then start train.log and write config.yaml."""
    saved = load_config(run_dir / "config.yaml") if resume else config
    check_resumable(saved, config)
    ensure_writable(run_dir, "train.py writes its logs and checkpoints there")
    setup_logging(run_dir / "train.log")
    logger.info("command: %s", " ".join(sys.argv))
    warn_schedule_change(saved, config)
    save_config(config, run_dir / "config.yaml")


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
