"""Checks that need a CUDA device (skipped elsewhere): the training step stays on the device,
bf16 autocast keeps the losses finite, GPU evaluation agrees with the CPU's, the folded ViT
attention qualifies for flash attention, and the compiled step with CUDA graphs trains as the
eager one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import graphed_compile, make_trainer
from segment_anything.modeling.image_encoder import Attention
from torch.nn.attention import SDPBackend, sdpa_kernel

from dataloaders.synthetic import generate_synthetic
from engine.trainer import Trainer
from evaluation.metrics import slice_metrics
from networks.sam import SDPAttention

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
    scalars = trainer.meter.read()  # floats, and a list for the per-domain Dice sums
    values = [x for v in scalars.values() for x in (v if isinstance(v, list) else [v])]
    assert values and all(x == x and abs(x) < 1e6 for x in values), scalars


def test_bf16_step_is_finite_and_on_the_device(trainer: Trainer) -> None:
    out, gt = trainer.train_step()
    trainer.step += 1
    assert out.loss.is_cuda and gt.masks.is_cuda and gt.domains.is_cuda
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
    from engine.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(trainer.state(), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt", map_location="cuda")
    assert state["step"] == trainer.step
    assert state["rng"]["cuda"] is not None


@pytest.mark.parametrize("grid", [14, 32], ids=["window", "global-512px"])
def test_folded_attention_runs_on_flash_attention_and_matches_the_mask(grid: int) -> None:
    """ViT-B's windowed (14 x 14) and 512-px global (32 x 32) blocks in bf16: under the
    flash-only backend the folded layer must run forward and backward (an ineligible input
    raises), and be no further from the fp32 upstream layer than the masked one is, give or take
    bf16 rounding (on the CPU both were 1-2.5 % off in relative norm)."""
    torch.manual_seed(0)
    upstream = Attention(768, num_heads=12, use_rel_pos=True, input_size=(grid, grid)).cuda()
    with torch.no_grad():
        upstream.rel_pos_h.normal_(std=0.5)
        upstream.rel_pos_w.normal_(std=0.5)
    layer = SDPAttention(upstream)
    x = torch.randn(4, grid, grid, 768, device="cuda", requires_grad=True)

    def output_and_grad(module, autocast: bool):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = module(x)
            (grad,) = torch.autograd.grad(out.float().square().sum(), x)
        return out.detach().float(), grad

    reference = output_and_grad(upstream, autocast=False)
    errors = {}
    for mode, backend in (
        ("mask", SDPBackend.EFFICIENT_ATTENTION),
        ("folded", SDPBackend.FLASH_ATTENTION),
    ):
        layer.mode = mode
        with sdpa_kernel(backend):
            got = output_and_grad(layer, autocast=True)
        errors[mode] = [float((g - r).norm() / r.norm()) for g, r in zip(got, reference)]
    for folded, masked in zip(errors["folded"], errors["mask"]):
        assert folded < 0.05 and folded < 1.5 * masked + 0.005, errors


@pytest.mark.parametrize("scope", ["networks", "step"])
def test_compiled_step_with_cuda_graphs_tracks_eager_and_never_synchronises(
    tmp_path_factory: pytest.TempPathFactory, scope: str
) -> None:
    """``train.compile_mode=reduce-overhead`` (the prostate config's): Inductor's kernels replayed
    as CUDA graphs, per network or for the whole step (``train.compile_scope``). Five iterations
    (the first two warm up and record the graphs, the last three replay them under
    ``set_sync_debug_mode("error")``) give the eager run's losses up to bf16 rounding. Each loss
    is cloned before the next step: a replay reuses its output memory."""
    root = generate_synthetic(
        tmp_path_factory.mktemp("synthetic"), seed=2, train_per_domain=8, test_per_domain=2, size=64
    )
    losses = {}
    for name, overrides in (("eager", ()), ("compiled", graphed_compile(scope))):
        trainer = make_trainer(root, tmp_path_factory.mktemp(name), *overrides, device="cuda")
        run = [trainer.iterate().loss.detach().clone() for _ in range(2)]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            run += [trainer.iterate().loss.detach().clone() for _ in range(3)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        losses[name] = torch.stack(run).float().cpu()
    assert torch.isfinite(losses["compiled"]).all()
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=2e-2, atol=1e-3)
