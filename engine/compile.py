"""torch.compile for a run: the modes and scopes ``train.compile_*`` accept, and what the step
function and networks become when compiled."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.config import ConfigError, TrainConfig
from method.batches import Models
from method.step import synfoc_step

# torch.compile modes accepted as train.compile_mode, and what train.compile_scope may capture.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("networks", "step")


def check_compile(train: TrainConfig) -> None:
    """Raise :class:`ConfigError` for an unknown ``train.compile_mode`` or ``compile_scope``."""
    for key, value, choices in (
        ("compile_mode", train.compile_mode, COMPILE_MODES),
        ("compile_scope", train.compile_scope, COMPILE_SCOPES),
    ):
        if value not in choices:
            raise ConfigError(f"train.{key}: unknown {value!r}; expected one of {list(choices)}")


def compiled_step(train: TrainConfig, models: Models) -> tuple[Models, Callable]:
    """The networks and the step function that :meth:`Trainer.forward` calls: the originals,
    each network compiled (``train.compile_scope=networks``), or the whole step compiled with
    the original networks inside it (``step``).

    Static shapes: the teacher (batch B) and student (2B) forwards of one class share a compile
    cache, and automatic dynamic shapes would make the batch symbolic after the second size;
    with ``dynamic=False`` each of the few sizes gets its own specialised graph. The mode is
    ``train.compile_mode`` (``reduce-overhead`` replays CUDA graphs, which the step allows: it
    never synchronises with the host). Compiled networks share the originals' weights, and
    checkpoints use the originals.
    """
    if not train.compile:
        return models, synfoc_step
    if train.compile_scope == "step":
        return models, torch.compile(synfoc_step, dynamic=False, mode=train.compile_mode)
    compiled = {
        k: m if m is None else torch.compile(m, dynamic=False, mode=train.compile_mode)
        for k, m in vars(models).items()
    }
    return Models(**compiled), synfoc_step
