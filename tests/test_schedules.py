"""lambda(t) and the foundation learning rate (method/schedules.py, engine/optim.py)."""

from __future__ import annotations

import math

import pytest
from helpers import make_trainer

from dataloaders.synthetic import generate_synthetic
from engine.optim import foundation_lr
from method.schedules import consistency_ramp, ramp_phase


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("gaussian", (math.exp(-5.0), math.exp(-1.25), 1.0)),
        ("linear", (0.0, 0.5, 1.0)),
        ("none", (1.0, 1.0, 1.0)),
    ],
)
def test_ramp_at_start_middle_end(kind: str, expected: tuple[float, float, float]) -> None:
    values = [consistency_ramp(t, 1000, kind) for t in (0, 500, 1000)]
    assert values == pytest.approx(list(expected), rel=1e-12)


def test_continuous_ramp_by_hand_and_weighted() -> None:
    # stairs = 0: neighbouring steps differ. 30k horizon, step 7500: t = 0.25,
    # exp(-5 * 0.75^2) = exp(-2.8125).
    assert consistency_ramp(301, 60000) > consistency_ramp(300, 60000)
    assert consistency_ramp(7500, 30000) == pytest.approx(math.exp(-2.8125), rel=1e-12)
    assert consistency_ramp(500, 1000, "gaussian", weight=2.0) == pytest.approx(2 * math.exp(-1.25))
    assert consistency_ramp(2000, 1000) == 1.0  # clipped past the end
    assert consistency_ramp(2000, 1000, "linear", weight=0.5) == 0.5  # never above the weight


def test_staircase_ramp_by_hand() -> None:
    # The reference: exp(-5 (1 - s/200)^2) with s = floor(t / (30000 / 200)) = floor(t / 150).
    stairs = dict(horizon=30000, stairs=200)
    assert consistency_ramp(0, **stairs) == pytest.approx(math.exp(-5.0))
    assert consistency_ramp(149, **stairs) == pytest.approx(math.exp(-5.0))  # still stair 0
    assert consistency_ramp(150, **stairs) == pytest.approx(math.exp(-5 * (199 / 200) ** 2))
    assert consistency_ramp(899, **stairs) == pytest.approx(math.exp(-5 * (195 / 200) ** 2))
    assert consistency_ramp(9750, **stairs) == pytest.approx(math.exp(-5 * (135 / 200) ** 2))
    assert consistency_ramp(29999, **stairs) == pytest.approx(math.exp(-5 * (1 / 200) ** 2))
    assert consistency_ramp(30000, **stairs) == 1.0
    # The staircase of SPEC 4.8 for a 60k run: 15k -> 0.060, 30k -> 0.287, 45k -> 0.732.
    values = [consistency_ramp(t, 60000, stairs=200) for t in (15000, 30000, 45000)]
    assert values == pytest.approx([0.0601, 0.2865, 0.7316], abs=5e-4)
    assert ramp_phase(299, 60000, 200) == 0.0 and ramp_phase(300, 60000, 200) == 1 / 200


def test_ramp_errors() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        consistency_ramp(0, 10, "sigmoid")
    with pytest.raises(ValueError, match="horizon"):
        consistency_ramp(0, 0)
    with pytest.raises(ValueError, match="ramp_stairs"):
        consistency_ramp(0, 10, stairs=-1)


def authors_lambda(step: int, max_iterations: int = 30000, rampup: float = 200.0) -> float:
    """The reference's w(t) as SPEC 4.8 states it, written out independently of ours:
    sigmoid_rampup(floor(iter / (max_iter / 200)), 200) with max_iter forced to the dataset's
    length (30k for BUSI)."""
    current = min(max(math.floor(step / (max_iterations / rampup)), 0.0), rampup)
    return math.exp(-5.0 * (1.0 - current / rampup) ** 2)


def test_a_900_iteration_busi_run_follows_the_authors_lambda(samples_root, tmp_path) -> None:
    """With configs/busi.yaml's defaults, a shortened run gives the lambda the authors' code
    gives at the same iterations (it forces a 30k schedule whatever the run length): <= 0.009
    up to 900."""
    trainer = make_trainer(
        samples_root / "Dataset_BUSI_with_GT", tmp_path / "run", "data.lb_num=2",
        "train.max_iterations=900", config_file="configs/busi.yaml",
    )  # fmt: skip
    assert trainer.ramp_iterations == 30000 and trainer.config.method.ramp_stairs == 200
    seen = []
    trainer.step_fn = lambda *args, lam, **kwargs: seen.append(lam)  # stop before the networks
    for step in (0, 149, 150, 451, 899):
        trainer.step = step
        trainer.forward(*trainer.next_batches()[:2])
    assert seen == pytest.approx([authors_lambda(t) for t in (0, 149, 150, 451, 899)], rel=1e-12)
    assert max(seen) <= 0.009


def test_the_old_schedule_is_the_run_length_horizon(tmp_path) -> None:
    """``method.ramp_iterations`` = the run length, continuous: the schedule before the fix."""
    root = generate_synthetic(tmp_path / "data", seed=1, train_per_domain=4, test_per_domain=1,
                              size=32)  # fmt: skip
    trainer = make_trainer(
        root, tmp_path / "run", "train.max_iterations=900", "method.ramp_iterations=900",
        "method.ramp_stairs=0",
    )  # fmt: skip
    seen = []
    trainer.step_fn = lambda *args, lam, **kwargs: seen.append(lam)
    trainer.step = 300
    trainer.forward(*trainer.next_batches()[:2])
    assert seen == pytest.approx([math.exp(-5 * (2 / 3) ** 2)])  # 0.108, as the GPU run logged


def test_constant_lr_with_and_without_warmup() -> None:
    assert foundation_lr(0, 1e-4, 100, 0, "constant") == 1e-4
    assert foundation_lr(99, 1e-4, 100, 0, "constant") == 1e-4
    # Linear warm-up (SAMed): base * (step + 1) / warmup.
    assert foundation_lr(0, 1e-4, 100, 10, "constant") == pytest.approx(1e-5)
    assert foundation_lr(4, 1e-4, 100, 10, "constant") == pytest.approx(5e-5)
    assert foundation_lr(10, 1e-4, 100, 10, "constant") == 1e-4


def test_poly_lr() -> None:
    # The horizon is the schedule's own (optim.foundation_schedule_iterations), not the run's.
    assert foundation_lr(10, 1.0, 110, 10, "poly") == 1.0
    assert foundation_lr(60, 1.0, 110, 10, "poly") == pytest.approx(0.5**0.9)
    assert foundation_lr(110, 1.0, 110, 10, "poly") == 0.0
    assert foundation_lr(50, 1.0, 100, 0, "poly") == pytest.approx(0.5**0.9)


def test_lr_errors() -> None:
    with pytest.raises(ValueError, match="foundation_schedule"):
        foundation_lr(0, 1e-4, 100, 0, "cosine")
    with pytest.raises(ValueError, match="foundation_warmup"):
        foundation_lr(0, 1e-4, 100, -1, "constant")
    with pytest.raises(ValueError, match="foundation_warmup"):
        foundation_lr(100, 1e-4, 100, 100, "poly")
