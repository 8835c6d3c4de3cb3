"""scripts/sweep.py on a real single-node Slurm cluster (scripts/ci/cluster.py): a 2 x 2 grid of
tiny synthetic CPU runs, and a point preempted (USR2) and one cancelled mid-run.

Skipped, with the reason, where the cluster cannot start (not root, Slurm or munge not
installed); with SYNFOC_REQUIRE_SLURM=1 (set by .ci/run) that is a failure instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_tiny_sweep

from dataloaders.synthetic import generate_synthetic
from engine.checkpoint import load_checkpoint
from scripts import sweep as sweep_cli
from scripts.ci.cluster import Cluster, ClusterError, start_cluster, unavailable_reason
from scripts.sweep_jobs import read_records, sweep_status
from scripts.sweep_plan import Point, load_sweep

pytestmark = pytest.mark.slurm
SLURM = {"kind": "slurm", "partition": "debug", "time": 10, "cpus": 1}


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """munged + slurmctld + slurmd for the session; stopped by their pid files at the end."""
    reason = unavailable_reason()
    if reason and os.environ.get("SYNFOC_REQUIRE_SLURM") == "1":
        pytest.fail(f"SYNFOC_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    try:
        cluster = start_cluster(root)
    except ClusterError as error:
        pytest.fail(f"the Slurm cluster did not start: {error}")
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = previous
    assert not any(p.exists() for p in cluster.pid_files())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=3, train_per_domain=6, test_per_domain=2, size=64)


def assert_finished(point: Point) -> None:
    """The point's run trained to its last step and evaluated it."""
    last = load_checkpoint(point.run_dir / "checkpoints" / "last.pt")
    assert last["step"] == point.max_iterations
    assert (point.run_dir / "eval" / f"{point.max_iterations}.json").is_file()


def test_grid_runs_on_slurm(slurm_cluster, data_root, tmp_path, capsys) -> None:
    grid = {"method": ["suponly", "synfoc"], "train.seed": [1, 2]}
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, grid, SLURM, iterations=3)
    assert sweep_cli.main([str(path), "--wait", "150"]) == 0
    sweep = load_sweep(path)
    for point in sweep.points:
        assert_finished(point)
    records = read_records(sweep)
    assert len({r["job_id"] for r in records.values()}) == 4  # one Slurm job per point
    script = next((sweep.state_dir / "slurm").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --cpus-per-task=1" in script
    assert "#SBATCH --signal=USR2@90" in script  # submitit's preemption / time-out signal
    capsys.readouterr()
    assert sweep_cli.main([str(path), "--status"]) == 0
    printed = capsys.readouterr().out
    assert "4 points: 4 done" in printed and "(n=2)" in printed


def wait_for_step(point: Point, step: int, timeout_s: float) -> None:
    """Block until the run logged ``step`` (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    log = point.run_dir / "train.log"
    while time.monotonic() < deadline:
        logged = re.findall(r"step (\d+)/", log.read_text()) if log.is_file() else []
        if logged and int(logged[-1]) >= step:
            return
        time.sleep(0.3)
    raise AssertionError(f"{point.key} did not reach step {step} in {timeout_s:.0f} s")


def resumed_at(point: Point) -> list[int]:
    """The steps the run was resumed at, from its train.log."""
    return [int(s) for s in re.findall(r"resumed from .* at step (\d+)", read_log(point))]


def read_log(point: Point) -> str:
    return (point.run_dir / "train.log").read_text()


def test_preempted_and_cancelled_points_resume(slurm_cluster, data_root, tmp_path, capsys):
    """One job preempted (USR2: submitit requeues it), one cancelled outright; re-submitting
    the sweep restarts only the cancelled one, and both finish from their checkpoints."""
    grid = {"train.seed": [1, 2]}
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, grid, SLURM, iterations=40)
    assert sweep_cli.main([str(path)]) == 0
    sweep = load_sweep(path)
    preempted, cancelled = sweep.points
    jobs = {key: r["job_id"] for key, r in read_records(sweep).items()}
    for point in sweep.points:
        wait_for_step(point, 3, timeout_s=60)
    scancel = ["scancel", "--signal=USR2", jobs[preempted.key]]
    subprocess.run(scancel, check=True, timeout=30, env={**os.environ, **slurm_cluster.env})
    subprocess.run(["scancel", jobs[cancelled.key]], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while sweep_status(sweep)[1].live and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sweep_status(sweep)[1].state == "failed"  # cancelled, not done, no job left
    capsys.readouterr()
    assert sweep_cli.main([str(path), "--wait", "150"]) == 0
    assert "1 of 2 runs to start" in capsys.readouterr().out  # the requeued one is left alone
    assert [s.state for s in sweep_status(sweep)] == ["done", "done"]
    for point in sweep.points:
        assert_finished(point)
        # Step 3 was logged before the signal; the loop logs a step before it writes that
        # step's checkpoint, so last.pt held step 2 at least (not a restart from scratch).
        assert resumed_at(point) and resumed_at(point)[0] >= 2, read_log(point)
    # The preempted point kept its job (requeued by submitit); the cancelled one got a new one.
    records = read_records(sweep)
    assert records[preempted.key]["job_id"] == jobs[preempted.key]
    assert records[cancelled.key]["job_id"] != jobs[cancelled.key]
