"""Helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]

# Config overrides for a run small enough for two CPU cores: a 64-px tiny ViT, a 4-channel
# U-Net at 32 px, 4 labeled images, batch 2+2.
TINY_OVERRIDES = [
    "model.foundation=tiny",
    "model.image_size=64",
    "model.unet_width=4",
    "data.patch_size=32",
    "data.lb_num=4",
    "data.labeled_bs=2",
    "data.unlabeled_bs=2",
    "eval.batch_size=8",
]


def graphed_compile(scope: str) -> tuple[str, ...]:
    """Config overrides of a run compiled as the prostate config trains (CUDA graphs), capturing
    ``scope`` (``train.compile_scope``: networks | step)."""
    return (
        "train.compile=true",
        "train.compile_mode=reduce-overhead",
        f"train.compile_scope={scope}",
    )


def make_trainer(
    data_root: Path,
    run_dir: Path,
    *overrides: str,
    device: str = "cpu",
    config_file: str = "configs/demo.yaml",
) -> Trainer:
    """A ``Trainer`` of ``config_file`` (the demo's: synthetic data) made tiny, on the data at
    ``data_root``, writing to ``run_dir``, with its models in training modes (as ``fit`` sets
    them)."""
    from engine.config import load_config
    from engine.trainer import Trainer

    config = load_config(
        config_file,
        [*TINY_OVERRIDES, f"train.device={device}", f"data.root={data_root}", *overrides],
    )
    trainer = Trainer(config, run_dir, progress=False)
    trainer.train_modes()
    return trainer


def run_module(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m module args...`` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_tiny_sweep(
    path: Path,
    data_root: Path,
    grid: dict,
    executor: dict,
    iterations: int = 2,
    **sections,
) -> Path:
    """A sweep file of tiny synthetic CPU runs (``TINY_OVERRIDES``) over ``grid``, written to
    ``path``; its runs go to ``path.parent / "out"``. ``sections`` add or replace top-level keys."""
    import yaml

    fixed = {key: yaml.safe_load(value) for key, value in (o.split("=", 1) for o in TINY_OVERRIDES)}
    fixed.update(
        {
            "data.root": str(data_root),
            "train.device": "cpu",
            "train.max_iterations": iterations,
            "train.eval_interval": 1000,  # evaluate once, at the last step
            "train.log_interval": 1,
            "train.checkpoint_interval": 1,
        }
    )
    sweep = {"config": "configs/demo.yaml", "out": str(path.parent / "out"), "set": fixed}
    sweep.update(grid=grid, executor=executor, **sections)
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path
