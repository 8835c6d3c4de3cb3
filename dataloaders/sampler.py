"""Endless shuffled batches drawn on the training device.

The whole decoded training set is a few hundred MB of uint8 canvases, so the trainer keeps it on
the device and gathers each batch by index: no worker processes, no host-to-device copy per step
(the reference re-spawned its CPU workers on every pass over the labeled set).
"""

from __future__ import annotations

from typing import Any

import torch


class RandomBatches:
    """Index batches of a fixed size from reshuffled passes over ``n`` items (drop-last).

    Each pass is a fresh ``torch.randperm`` drawn from ``generator``; a pass is cut into
    ``n // batch_size`` batches and its remainder dropped, as a ``DataLoader(shuffle=True,
    drop_last=True)`` would. The position inside a pass is a host integer, so drawing a batch never
    synchronises with the device.

    Args:
        n: number of items (must be >= batch_size; the data layer checks this with a clear error).
        batch_size: indices per batch.
        generator: random generator living on ``device``.
        device: where the index tensors live.
    """

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> None:
        if n < batch_size:
            raise ValueError(f"cannot draw batches of {batch_size} from {n} items")
        self.n, self.batch_size = n, batch_size
        self.generator, self.device = generator, device
        self._order = torch.empty(0, dtype=torch.long, device=device)
        self._position = n  # forces a new pass on the first call

    def next(self) -> torch.Tensor:
        """The next batch: int64 indices (batch_size,) on the device."""
        if self._position + self.batch_size > self.n:
            self._order = torch.randperm(self.n, generator=self.generator, device=self.device)
            self._position = 0
        batch = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"order": self._order.cpu(), "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._order = state["order"].to(self.device)
        self._position = int(state["position"])
