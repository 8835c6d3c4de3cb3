"""The training iteration never reads a tensor's value back to the host, checked on the CPU.

On a GPU, every such read (``.item()``, ``float(t)``, ``if t:``, boolean-mask indexing,
``nonzero``, ``unique``, a device change) stalls the host until the GPU catches up. The CUDA test
checks this with ``torch.cuda.set_sync_debug_mode("error")``, which only runs where there is a GPU.
Here a dispatch mode (``utils.host_reads.HostReadRecorder``) sees every ATen operator of the same
iteration on the CPU and flags the ones whose output depends on tensor values the host would have
to wait for, so CI catches a new read-back too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_trainer

from dataloaders.synthetic import generate_synthetic
from utils.host_reads import HostReadRecorder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=3, train_per_domain=8, test_per_domain=2, size=64)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["method.teacher_bn=running", "method.alpha=cps", "method.consistency=cr"],
        [
            "method.alpha=linear",
            "method.copy_paste=false",
            "method.students=foundation",
            "method.consistency=none",
        ],
        ["method.supervised_only=true", "method.consistency=none"],
    ],
    ids=["synfoc", "running-bn-cps-cr", "linear-no-copy-paste-foundation", "suponly"],
)
def test_training_iterations_read_nothing_back(data_root, tmp_path, overrides) -> None:
    trainer = make_trainer(data_root, tmp_path / "run", *overrides)
    trainer.iterate()  # the first iteration may initialise lazily (optimizer states)
    recorder = HostReadRecorder()
    with recorder:
        for _ in range(2):
            trainer.iterate()  # as the loop between two log steps, diagnostics included
    assert not recorder.reads, "host read-backs in the training iteration:\n" + "\n".join(
        dict.fromkeys(recorder.reads)
    )
    assert trainer.step == 3


@pytest.mark.parametrize(
    "read_back",
    [
        lambda x: x.sum().item(),
        lambda x: bool(x.max() > 0.5),
        lambda x: x[x > 0.5],
        lambda x: torch.unique(x > 0.5),
        lambda x: x.to("cpu" if x.is_cuda else "meta"),
        lambda x: x + torch.tensor([1.0, 2.0]).sum(),
    ],
    ids=["item", "bool", "mask-index", "unique", "device-change", "tensor-from-data"],
)
def test_the_recorder_flags_each_kind_of_read_back(read_back) -> None:
    x = torch.rand(4, 4)
    recorder = HostReadRecorder()
    with recorder:
        x * 2 + 1  # arithmetic alone reads nothing
        assert not recorder.reads
        read_back(x)
    assert recorder.reads
