"""Versioned, atomically written training checkpoints.

A checkpoint is one dict (see :data:`FORMAT_VERSION` and :func:`save_checkpoint`):

- ``format_version``, ``step`` (iterations completed), ``config`` (the resolved config dict);
- ``models``: ``unet`` / ``unet_teacher`` (full state dicts) and ``foundation`` /
  ``foundation_teacher`` (trainable tensors only, under their real names; the frozen encoder is
  rebuilt from ``foundation_base``), ``None`` for a model that is not trained;
- ``foundation_base``: name and weight file of the foundation model the run started from;
- ``optimizers``, ``best`` (metric and step of ``best.pt``), ``sampler`` states and ``rng``: the
  run's generators (``generator``: batches and augmentation; ``copy_paste``: the boxes) and
  torch's global state.

Files are written to a temporary name in the same folder and moved into place with
``os.replace``, so a run killed mid-write never leaves a truncated ``last.pt``.

Every value is a tensor, a number, a string, ``None`` or a container of these, so checkpoints are
read with ``torch.load(..., weights_only=True)``: a crafted file cannot run code when a run is
resumed or tested, it is refused with one line (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from networks.pretrained import first_line, load_error_reason

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or of another format."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (with ``format_version`` added) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write checkpoint {path} ({first_line(error)}); it is unchanged"
        ) from None
    os.replace(tmp, path)


def ensure_writable(folder: str | Path, hint: str) -> None:
    """Create ``folder`` if needed and check that a file can be written in it, so that a run on
    a read-only path fails before any work instead of at its first checkpoint.

    Raises:
        CheckpointError: one line naming the folder, the system's reason and ``hint``.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CheckpointError(f"cannot write into {folder} ({reason}); {hint}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Only tensors and plain data are unpickled (``weights_only=True``).

    Raises:
        CheckpointError: one line: the file is missing, truncated or damaged (naming the other
            checkpoints of its folder), asks for anything but plain data (it could run code), or
            has another ``format_version``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or refused file
        others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
        hint = f"; {path.parent} also holds {', '.join(others)}" if others else ""
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({load_error_reason(error)}){hint}"
        ) from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {version!r}; this code reads {FORMAT_VERSION}"
        )
    return state


def load_model_states(models: Any, states: dict[str, dict | None]) -> None:
    """Load a checkpoint's per-model weights into freshly built ``models`` (a
    :class:`method.batches.Models`): full state dicts for the U-Nets, trainable tensors for the
    foundation models."""
    for name in ("unet", "unet_teacher", "foundation", "foundation_teacher"):
        model, state = getattr(models, name), states.get(name)
        if model is None or state is None:
            continue
        if name.startswith("foundation"):
            model.load_trainable_state_dict(state)
        else:
            model.load_state_dict(state)


def training_state(
    *,
    step: int,
    config: dict[str, Any],
    models: Any,
    foundation_base: dict[str, str | None],
    optimizers: dict[str, torch.optim.Optimizer],
    best: dict[str, Any],
    generators: dict[str, torch.Generator],
    sampler: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Everything needed to resume or to evaluate a run, in the layout of the module docstring.

    ``models`` is a :class:`method.batches.Models`; ``config`` the resolved config as a dict;
    ``sampler`` the batches' :meth:`~engine.batches.TrainBatches.state_dict`; ``generators``
    the run's random streams by name (``generator``: batches and augmentation; ``copy_paste``).
    """

    def weights(model: nn.Module | None, trainable_only: bool) -> dict | None:
        if model is None:
            return None
        return model.trainable_state_dict() if trainable_only else model.state_dict()

    rng = {name: g.get_state() for name, g in generators.items()}
    rng["torch"] = torch.get_rng_state()
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "step": step,
        "config": config,
        "models": {
            "unet": weights(models.unet, False),
            "unet_teacher": weights(models.unet_teacher, False),
            "foundation": weights(models.foundation, True),
            "foundation_teacher": weights(models.foundation_teacher, True),
        },
        "foundation_base": foundation_base,
        "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
        "best": dict(best),
        "rng": rng,
        "sampler": sampler,
    }


def restore_training_state(
    state: dict[str, Any],
    *,
    models: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    device: torch.device,
) -> None:
    """Load the weights, optimizer and random states of a :func:`training_state` into a freshly
    built run (the caller restores the step, ``best`` and the sampler).

    Raises:
      CheckpointError: a random stream of ``generators`` is not in the checkpoint (one written
        before copy-paste had its own stream cannot continue the same run).
    """
    missing = [name for name in generators if name not in state["rng"]]
    if missing:
        raise CheckpointError(
            f"checkpoint has no random state {missing} (written by an older version, where "
            "copy-paste shared the batches' stream): it cannot be resumed as the same run; "
            "test.py still evaluates it"
        )
    load_model_states(models, state["models"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    for name, generator in generators.items():
        generator.set_state(state["rng"][name].cpu())
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), device)


# What train.py writes into a run folder (for messages about folders that are not runs).
RUN_FOLDER_CONTENTS = "config.yaml, train.log, checkpoints/last.pt (and best.pt), eval/, tb/"


def resolve_checkpoint(run_dir: str | Path, which: str) -> Path:
    """The checkpoint file ``which`` names: ``last`` / ``best`` are ``run_dir/checkpoints/
    <which>.pt``; anything else is a path to a .pt file (relative to the working directory).

    Raises:
        CheckpointError: one line: ``run_dir`` is missing or not a run folder (neither
            ``config.yaml`` nor ``checkpoints/``), ``last.pt`` / ``best.pt`` is missing (the
            message lists the checkpoints the run holds), or ``which`` is neither ``last`` /
            ``best`` nor an existing file (the message lists the choices).
    """
    run_dir = Path(run_dir)
    if which in ("last", "best"):
        if not run_dir.is_dir():
            raise CheckpointError(f"run folder {run_dir} does not exist")
        folder = run_dir / "checkpoints"
        if not (run_dir / "config.yaml").is_file() and not folder.is_dir():
            raise CheckpointError(
                f"{run_dir} is not a run folder (no config.yaml, no checkpoints/); a run folder "
                f"written by train.py holds {RUN_FOLDER_CONTENTS}"
            )
        path = folder / f"{which}.pt"
        if not path.is_file():
            held = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
            raise CheckpointError(
                f"checkpoint {path} does not exist; {folder} holds "
                f"{', '.join(held) if held else 'no .pt files'}"
            )
        return path
    path = Path(which)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {which!r} is not a file; expected last | best | a path to a .pt file"
        )
    return path
