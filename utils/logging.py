"""Run logging: the text log, TensorBoard, and the evaluation image grid."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm


class _TqdmHandler(logging.StreamHandler):
    """Console handler that prints through tqdm so progress bars are not broken up."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never crash a run
            self.handleError(record)


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to the console (through tqdm) and, if given, append to ``log_file``."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(log_file)
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file)


def _palette(num_classes: int) -> torch.Tensor:
    """(K, 3) colours in [0, 1] for class indices 0..K-1; background black."""
    base = torch.tensor(
        [[0, 0, 0], [1, 0.2, 0.2], [0.2, 1, 0.2], [0.3, 0.5, 1], [1, 1, 0.2], [1, 0.3, 1]]
    )
    return base[torch.arange(num_classes) % len(base)]


def prediction_grid(
    images: torch.Tensor,
    target: torch.Tensor,
    predictions: Sequence[torch.Tensor],
    num_classes: int,
) -> torch.Tensor:
    """One row per example: image, ground truth, then each prediction, as colour tiles.

    Args:
        images: (N, C, H, W) float in [0, 1] (C = 1 or 3), already at the label resolution.
        target: (N, H, W) int class indices.
        predictions: tensors (N, H, W) of int class indices, one per model.
        num_classes: K = C + 1 (background included), for the palette.

    Returns:
        (3, N*H, (2 + len(predictions))*W) float image in [0, 1] for ``SummaryWriter.add_image``.
    """
    colours = _palette(num_classes).to(images.device)
    gray = images.float().mean(1, keepdim=True).expand(-1, 3, -1, -1)
    tiles = [gray] + [colours[m.long()].permute(0, 3, 1, 2) for m in (target, *predictions)]
    rows = torch.cat(tiles, dim=3)  # (N, 3, H, T*W)
    return torch.cat(list(rows), dim=1).clamp(0, 1).cpu()
