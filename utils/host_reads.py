"""A dispatch mode that sees every ATen operator: counts them and flags host read-backs.

On a GPU, every read of a tensor's value on the host (``.item()``, ``float(t)``, ``if t:``,
boolean-mask indexing, ``nonzero``, ``unique``, a device change) stalls the host until the GPU
catches up, and every operator is one host call (most launch a kernel). The recorder runs on any
device, the CPU included, so the test suite (``tests/test_host_reads.py``) and the bench's host
profile (``scripts/host_profile.py``) find new read-backs and count launches without a GPU.
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operators that need tensor values on the host: the scalar read behind .item() / float() /
# bool(), and those whose output size depends on the data.
HOST_READS = {
    "aten._local_scalar_dense.default",
    "aten.is_nonzero.default",
    "aten.equal.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten._unique2.default",
    "aten.unique_dim.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
    "aten.lift_fresh.default",  # torch.tensor(host data): a host-to-device copy on a GPU
}


class HostReadRecorder(TorchDispatchMode):
    """Counts the operators dispatched inside it (``ops``: name -> calls) and records each
    host-reading one with the repository frames that called it (``reads``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops[str(func)] += 1
        if reads_host(func, args, kwargs):
            frames = traceback.extract_stack()[:-1]
            # AdamW's step counter: on a GPU the trainer uses fused AdamW, whose counter stays on
            # the device; only the CPU's single-tensor path reads its host counter (.item()).
            if not any("torch/optim/" in f.filename for f in frames):
                self.reads.append(f"{func} from {caller(frames)}")
        return func(*args, **kwargs)

    @property
    def calls(self) -> int:
        """Operators dispatched so far."""
        return sum(self.ops.values())


def reads_host(func, args, kwargs) -> bool:
    """Whether operator ``func`` on these arguments needs tensor values on the host."""
    name = str(func)
    if name == "aten.index.Tensor":  # x[mask] with a boolean mask is a nonzero
        return any(i is not None and i.dtype == torch.bool for i in args[1])
    if name == "aten._to_copy.default":  # .to(device) / .cpu(); dtype casts are fine
        return kwargs.get("device") is not None
    return name in HOST_READS


def caller(frames: list[traceback.FrameSummary], depth: int = 3) -> str:
    """The innermost ``depth`` frames of this repository (not of installed packages or tests),
    innermost first, as ``file:line code`` joined by ``<-``."""
    ours = [
        f"{Path(f.filename).name}:{f.lineno} {f.line}"
        for f in frames
        if "site-packages" not in f.filename and "tests" not in f.filename
    ]
    return " <- ".join(reversed(ours[-depth:]))
