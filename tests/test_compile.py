"""The trainer's torch.compile path (``train.compile``, ``train.compile_mode``) on the CPU.

Inductor's code generation for even the tiny networks takes minutes on two CPU cores (~4.5 min
for the test below), so these tests swap in the ``aot_eager`` backend: the same Dynamo capture
of each network and the same AOT-autograd forward and backward graphs, run by eager kernels.
Inductor and CUDA graphs run on a GPU (``tests/test_cuda.py``, ``scripts/bench.py --compile``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import graphed_compile, make_trainer
from torch._dynamo.utils import counters

from dataloaders.synthetic import generate_synthetic
from method.step import synfoc_step


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=5, train_per_domain=8, test_per_domain=2, size=64)


@pytest.mark.parametrize(("scope", "compiled_objects"), [("networks", 4), ("step", 1)])
def test_compiled_training_equals_eager_without_graph_breaks(
    data_root, tmp_path, monkeypatch, scope, compiled_objects
) -> None:
    """Three iterations with ``train.compile`` (mode ``reduce-overhead``, as the prostate config
    trains) give the eager run's losses and weights, whether each network is compiled (both
    students and both teachers) or the whole step is; nothing breaks its graph (a break would
    split the CUDA graphs on a GPU, and a float baked in as a constant would recompile the step
    every iteration); evaluation and checkpoints use the original modules."""
    modes = []
    compile_ = torch.compile

    def compile_with_aot_eager(model, *, dynamic, mode):
        modes.append(mode)
        return compile_(model, dynamic=dynamic, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_with_aot_eager)
    torch._dynamo.reset()
    counters.clear()
    runs = {}
    for name, overrides in (("eager", ()), ("compiled", graphed_compile(scope))):
        trainer = make_trainer(data_root, tmp_path / name, *overrides)
        losses = [float(trainer.iterate().loss.detach()) for _ in range(3)]
        runs[name] = trainer, losses
    (eager, eager_losses), (compiled, compiled_losses) = runs["eager"], runs["compiled"]

    assert modes == ["reduce-overhead"] * compiled_objects
    compiled_networks = compiled.step_models is not compiled.models
    assert compiled_networks == (scope == "networks") and eager.step_models is eager.models
    assert (compiled.step_fn is not synfoc_step) == (scope == "step")
    assert counters["graph_break"] == {}, dict(counters["graph_break"])
    # networks: the student U-Net at 2B and (its weak view, no grad) at B, the U-Net teacher,
    # the foundation student at 2B and its teacher at B; step: one graph for the whole step.
    assert counters["stats"]["unique_graphs"] == (5 if scope == "networks" else 1)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    for model in ("unet", "foundation", "unet_teacher", "foundation_teacher"):
        for (name, got), expected in zip(
            getattr(compiled.models, model).named_parameters(),
            getattr(eager.models, model).parameters(),
        ):
            torch.testing.assert_close(got, expected, msg=f"{model}.{name}")
    state = compiled.state()["models"]
    assert not any("_orig_mod" in key for weights in state.values() for key in weights)
    assert compiled.evaluate() == eager.evaluate()  # every metric and count, both students
