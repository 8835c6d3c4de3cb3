"""Checks that need a CUDA device (skipped elsewhere): the training step stays on the device,
bf16 autocast keeps the losses finite, and GPU evaluation agrees with the CPU's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_trainer

from dataloaders.synthetic import generate_synthetic
from utils.metrics import slice_metrics
from utils.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    root = generate_synthetic(
        tmp_path_factory.mktemp("synthetic"), seed=1, train_per_domain=8, test_per_domain=4, size=64
    )
    return make_trainer(root, tmp_path_factory.mktemp("run"), device="cuda")


def test_training_steps_never_synchronise_with_the_host(trainer: Trainer) -> None:
    trainer.iterate()  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.iterate()  # as the loop between two log steps, diagnostics included
    finally:
        torch.cuda.set_sync_debug_mode("default")
    scalars = trainer.meter.read()
    assert all(v == v and abs(v) < 1e6 for v in scalars.values()), scalars


def test_bf16_step_is_finite_and_on_the_device(trainer: Trainer) -> None:
    out, gt = trainer.train_step()
    trainer.step += 1
    assert out.loss.is_cuda and gt.is_cuda
    assert torch.isfinite(out.loss)
    assert all(v.is_cuda for v in out.scalars.values())


def test_gpu_metrics_equal_cpu_metrics() -> None:
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(6, 96, 80, generator=generator) > 0.7
    target = torch.rand(6, 96, 80, generator=generator) > 0.6
    pred[0] = False  # one empty prediction: the penalty path
    cpu = slice_metrics(pred, target)
    gpu = slice_metrics(pred.cuda(), target.cuda())
    for name, values in cpu.items():
        torch.testing.assert_close(gpu[name].cpu(), values, equal_nan=True)


def test_evaluation_runs_on_the_device(trainer: Trainer) -> None:
    results = trainer.evaluate()
    assert set(results) == {"unet", "foundation"}
    assert set(results["unet"]["domains"]) == {"siteA", "siteB", "siteC"}


def test_checkpoint_round_trip_on_the_device(trainer: Trainer, tmp_path: Path) -> None:
    from utils.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(trainer.state(), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt", map_location="cuda")
    assert state["step"] == trainer.step
    assert state["rng"]["cuda"] is not None
