"""Device-side running sums of the step's scalars, read back once per logging interval."""

from __future__ import annotations

import math

import torch


class ScalarMeter:
    """Running sums of device tensors (0-dim scalars, or small tensors of a fixed shape per name),
    kept as one flat device vector; one host transfer per :meth:`read`.

    It also counts, on the device, the steps after which every running sum was still finite. A
    nan or inf makes its sum non-finite for good (they never cancel back into a finite number),
    so that count says at which step of the interval the first non-finite value came, without a
    read-back per step (:meth:`nonfinite`).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._layout: list[tuple[str, torch.Size]] = []
        self._sum: torch.Tensor | None = None
        self._finite_steps: torch.Tensor | None = None
        self.steps = 0  # steps added since the last read

    def add(self, scalars: dict[str, torch.Tensor]) -> None:
        """Add one step's values (the same names and shapes every step). The sums never alias
        them: a compiled step with CUDA graphs writes the next step's outputs into the same
        memory, and ``torch.cat`` copies."""
        layout = [(name, value.shape) for name, value in scalars.items()]
        flat = torch.cat([v.detach().float().reshape(-1) for v in scalars.values()])
        if self._sum is None:
            self._layout, self._sum = layout, flat
        elif layout != self._layout:
            raise ValueError(f"ScalarMeter.add: {layout}; this interval added {self._layout}")
        else:
            self._sum = self._sum + flat
        finite = torch.isfinite(self._sum).all().long()
        self._finite_steps = finite if self._finite_steps is None else self._finite_steps + finite
        self.steps += 1

    def read(self) -> dict[str, float | list[float]]:
        """Means since the last read (the only synchronising call), then reset: a float per
        0-dim entry, a flat list (row-major) per larger one."""
        if self._sum is None:
            return {}
        flat = (self._sum / self.steps).tolist()
        means, start = {}, 0
        for name, shape in self._layout:
            size = shape.numel()
            means[name] = flat[start] if len(shape) == 0 else flat[start : start + size]
            start += size
        self._reset()
        return means

    def nonfinite(self) -> tuple[dict[str, float], int]:
        """The entries whose running sum is not finite (name -> its first non-finite value), and
        how many of the steps since the last read came before the first non-finite one. One host
        transfer; nothing is reset. ``({}, steps)`` while everything is finite."""
        if self._sum is None:
            return {}, 0
        *sums, finite_steps = torch.cat([self._sum, self._finite_steps[None].float()]).tolist()
        bad, start = {}, 0
        for name, shape in self._layout:
            values = [v for v in sums[start : start + shape.numel()] if not math.isfinite(v)]
            start += shape.numel()
            if values:
                bad[name] = values[0]
        return bad, int(finite_steps)
