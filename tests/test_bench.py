"""scripts/bench.py on the CPU: the figures it records, not how fast they are."""

from __future__ import annotations

import json

import pytest
from helpers import run_module


def test_bench_tiny_records_every_figure(tmp_path):
    record_path, profile_dir = tmp_path / "bench.json", tmp_path / "profiles"
    result = run_module(
        "scripts.bench",
        "--bench", "tiny",
        "--iterations", "3",
        "--warmup", "1",
        "--set", "method.alpha=mutual",
        "--json", str(record_path),
        "--profile", str(profile_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(record_path.read_text())
    assert record["bench"] == "tiny" and record["card"] == "CPU"
    assert record["overrides"] == ["method.alpha=mutual"]
    assert record["iterations"] == 3
    keys = ("ms_median", "ms_back_to_back", "images_per_s", "gflop", "eval_seconds")
    for key in (*keys, "ops_per_iteration"):
        assert record[key] > 0, key
    assert set(record["phases_ms"]) == {
        "batches", "forward", "backward", "optimizers + EMA", "diagnostics"
    }  # fmt: skip
    assert all(v > 0 for v in record["phases_ms"].values())
    assert record["eval_slices"] == 12 and record["eval_domains"] == 3
    assert "back to back" in result.stdout and "phases (ms)" in result.stdout
    assert record["device_busy_ms"] is None and "device busy" in result.stdout  # CUDA only
    table = (profile_dir / "profile_tiny_mutual.txt").read_text()
    assert "5 iterations" in table and "aten::" in table


def test_profile_names_tell_the_variants_apart():
    from scripts.bench_timing import profile_name

    assert profile_name("prostate", False, []) == "profile_prostate.txt"
    overrides = ["model.vit_attention=folded", "train.compile_mode=reduce-overhead"]
    assert (
        profile_name("prostate", True, overrides)
        == "profile_prostate_compile_folded_reduce-overhead.txt"
    )
    assert profile_name("busi", False, ["eval.models=[unet]"]) == "profile_busi_-unet-.txt"


def test_device_busy_time_sums_the_profile_in_microseconds():
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from scripts.bench_timing import device_busy_seconds

    def event(device_type, microseconds, annotation=False):
        return SimpleNamespace(
            device_type=device_type,
            self_device_time_total=microseconds,
            is_user_annotation=annotation,
        )

    events = [
        event(DeviceType.CUDA, 1500.0),  # two kernels
        event(DeviceType.CUDA, 2500.0),
        event(DeviceType.CPU, 4000.0),  # the aten operators that launched them
        event(DeviceType.CUDA, 900.0, annotation=True),
    ]
    assert device_busy_seconds(events) == pytest.approx(0.004)


def test_bench_records_append_across_calls(tmp_path):
    from scripts.bench_report import write_records

    path = tmp_path / "out" / "bench.json"
    write_records(path, [{"bench": "prostate", "compile": False}])
    write_records(path, [{"bench": "prostate", "compile": True}, {"bench": "busi"}])
    assert [r["bench"] for r in json.loads(path.read_text())] == ["prostate", "prostate", "busi"]


def test_busi_schedule_fits_both_runs_in_the_budget():
    from scripts.busi_schedule import busi_times, schedule

    records = [
        {"bench": "prostate", "compile": False, "overrides": [], "ms_back_to_back": 55.0},
        {"bench": "busi", "compile": False, "overrides": [], "ms_back_to_back": 40.0},
        {"bench": "busi", "compile": True, "overrides": [], "ms_back_to_back": 20.0},
        {
            "bench": "busi",
            "compile": False,
            "overrides": ["method.supervised_only=true", "method.consistency=none"],
            "ms_back_to_back": 10.0,
        },
    ]
    assert busi_times(records) == (10.0, 40.0)
    # (6 min - 2 x 60 s start-up) x 0.9 = 216 s; 216 s / 50 ms = 4320 -> 4300.
    assert schedule(10.0, 40.0, 6) == 4300
    assert schedule(10.0, 40.0, 1) == 100  # never below 100
    with pytest.raises(SystemExit, match="supervised_only"):
        busi_times(records[:3])


@pytest.mark.parametrize(
    "name, foundations, foundation_px, patch",
    [
        ("prostate", ("vit_b_random", "medsam_vit_b"), 512, 384),
        ("busi", ("litemedsam",), None, 256),  # LiteMedSAM's packaged input: 256
    ],
)
def test_bench_configs_match_the_speed_goal(tmp_path, name, foundations, foundation_px, patch):
    """The GPU benches time the models the speed goal names: ViT-B 512 + U-Net 384 (prostate),
    LiteMedSAM 256 + U-Net 256 (BUSI), batch 4+4 -- whatever the dataset config's default."""
    import argparse

    from dataloaders.specs import get_spec
    from scripts.bench_data import bench_config

    args = argparse.Namespace(device="cpu", compile=False, deterministic=False, set=[])
    config = bench_config(name, tmp_path, args)
    spec = get_spec(config.data.dataset)
    assert config.model.foundation in foundations
    if foundation_px is not None:
        assert (config.model.image_size or spec.foundation_size) == foundation_px
    assert (config.data.patch_size or spec.patch_size) == patch
    assert (config.data.labeled_bs, config.data.unlabeled_bs) == (4, 4)


def test_host_profile_of_two_tiny_iterations(tmp_path):
    """``--host_profile`` on the CPU: every count is positive, the phases add up to the
    iteration, the step reads nothing back to the host, the logging interval's read-back is
    found, and the tables are written."""
    record_path, profile_dir = tmp_path / "bench.json", tmp_path / "host"
    result = run_module(
        "scripts.bench",
        "--bench", "tiny",
        "--warmup", "1",
        "--host_only",
        "--host_profile", str(profile_dir),
        "--host_iterations", "2",
        "--json", str(record_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(record_path.read_text())
    host = record["host"]
    assert "ms_back_to_back" not in record and "host profile" in result.stdout
    assert set(host["ops_per_phase"]) == {
        "batches", "forward", "backward", "optimizers + EMA", "diagnostics"
    }  # fmt: skip
    assert all(v > 0 for v in host["ops_per_phase"].values()), host["ops_per_phase"]
    assert host["ops_per_iteration"] == pytest.approx(sum(host["ops_per_phase"].values()))
    for key in ("wall_ms", "cpu_ms", "top_level_ops", "python_calls", "python_ms", "module_calls"):
        assert host[key] > 0, key
    # Eager: nothing runs inside a compiled graph, and Python calls fewer operators than run.
    assert host["ops_outside_graphs"] == host["top_level_ops"] <= host["ops_per_iteration"]
    assert host["host_reads"] == []
    assert host["log"]["host_reads"] > 0 and host["log"]["ops"] > 0  # the one read-back
    assert host["log"]["ops_per_iteration"] == host["log"]["ops"] / host["log"]["interval"]
    assert host["sync_warnings"] is None and "kernel_launches" not in host  # CUDA only
    table = (profile_dir / "host_profile_tiny.txt").read_text()
    assert "host reads in the iteration: none" in table
    assert "functions by tottime" in table and "engine/trainer.py" in table


def test_host_profile_finds_a_host_read_in_the_step(tmp_path, monkeypatch):
    """A read-back added to the step shows up in the host profile, with its caller."""
    from helpers import make_trainer

    from dataloaders.synthetic import generate_synthetic
    from engine import trainer as trainer_module
    from scripts.host_profile import dispatch_counts

    root = generate_synthetic(
        tmp_path / "data", seed=0, train_per_domain=8, test_per_domain=1, size=64
    )
    trainer = make_trainer(root, tmp_path / "run")
    original = trainer_module.synfoc_step

    def step_with_a_read(*args, **kwargs):
        out = original(*args, **kwargs)
        float(out.loss.detach())  # as a stray .item() would
        return out

    monkeypatch.setattr("scripts.host_profile.synfoc_step", step_with_a_read)
    counts = dispatch_counts(trainer, 1)
    assert counts["ops_per_phase"]["forward"] > 0
    assert any("_local_scalar_dense" in read for read in counts["host_reads"]), counts


def test_pair_gain_compares_the_pair_with_one_run_after_the_other():
    from scripts.bench_report import pair_gain

    solo = [{"iterations": 100, "seconds": 10.0}, {"iterations": 50, "seconds": 10.0}]
    # Together, in 12 s: 80 and 40 iterations, which alone would take 8 s + 8 s = 16 s.
    pair = [{"iterations": 80, "seconds": 12.0}, {"iterations": 40, "seconds": 11.5}]
    assert pair_gain(solo, pair) == pytest.approx(16 / 12)


def test_rate_mode_on_the_tiny_bench(tmp_path):
    import time

    record_path = tmp_path / "bench.json"
    result = run_module(
        "scripts.bench", "--bench", "tiny", "--warmup", "1", "--rate_seconds", "0.5",
        "--start_at", str(time.time()), "--json", str(record_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(record_path.read_text())
    assert record["rate"]["iterations"] >= 5 and record["rate"]["seconds"] >= 0.5
    assert "iterations / s" in result.stdout
