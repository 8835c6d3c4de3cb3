"""scripts/sweep.py without Slurm: planning, bad input, the debug (in-process) and local
executors, skipping done points, resuming an interrupted one, status and summary."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import REPO, write_tiny_sweep

from dataloaders.synthetic import generate_synthetic
from engine.checkpoint import load_checkpoint
from engine.trainer import Trainer
from scripts import sweep as sweep_cli
from scripts.sweep_jobs import sweep_status
from scripts.sweep_plan import METHODS, load_sweep

DEBUG = {"kind": "debug"}
GRID = {"method": ["suponly", "synfoc"], "train.seed": [1, 2]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=3, train_per_domain=6, test_per_domain=2, size=64)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_dry_run_prints_every_point_and_its_own_folder(data_root, tmp_path, capsys) -> None:
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, GRID, DEBUG)
    assert sweep_cli.main([str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    folders = [line.split("-> ")[1] for line in printed.splitlines() if "-> " in line]
    assert len(folders) == 4 and len(set(folders)) == 4
    assert "method=suponly train.seed=2" in printed
    # Named as train.py names runs: method, labels, seed; SupOnly's switch as a suffix.
    assert any("/synthetic/suponly_both_tiny_d1_n4_s2_" in f for f in folders)
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_methods_expand_to_their_switches(data_root, tmp_path) -> None:
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, {"method": ["suponly"]}, DEBUG)
    (point,) = load_sweep(path).points
    assert all(o in point.overrides for o in METHODS["suponly"])
    assert point.max_iterations == 2


def test_debug_sweep_trains_skips_done_points_and_summarises(data_root, tmp_path, capsys) -> None:
    grid = {"method": ["synfoc"], "train.seed": [1, 2]}
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, grid, DEBUG)
    assert sweep_cli.main([str(path)]) == 0
    sweep = load_sweep(path)
    for point in sweep.points:
        assert load_checkpoint(point.run_dir / "checkpoints" / "last.pt")["step"] == 2
        assert (point.run_dir / "eval" / "2.json").is_file()
    stamps = [(p.run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns for p in sweep.points]
    capsys.readouterr()
    assert sweep_cli.main([str(path)]) == 0  # a second submission starts nothing
    assert "0 of 2 runs to start" in capsys.readouterr().out
    again = [(p.run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns for p in sweep.points]
    assert again == stamps
    assert sweep_cli.main([str(path), "--status"]) == 0
    printed = capsys.readouterr().out
    assert "2 points: 2 done" in printed
    assert "(n=2)" in printed and " ± " in printed  # mean ± std over the two seeds
    assert "(n=2)" in (sweep.out / "summary.md").read_text()


def test_interrupted_point_is_failed_then_resumes(data_root, tmp_path, monkeypatch, capsys):
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, {"train.seed": [1]}, DEBUG, 4)
    original = Trainer.train_step

    def killed_at_step_2(self):
        if self.step == 2:
            raise KeyboardInterrupt  # as if the job were killed
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        sweep_cli.main([str(path)])
    monkeypatch.setattr(Trainer, "train_step", original)
    sweep = load_sweep(path)
    (status,) = sweep_status(sweep)
    assert status.state == "failed" and status.detail.startswith("step 2/4: ")
    assert sweep_cli.main([str(path)]) == 0
    (point,) = sweep.points
    assert "at step 2" in (point.run_dir / "train.log").read_text()  # resumed, not restarted
    assert load_checkpoint(point.run_dir / "checkpoints" / "last.pt")["step"] == 4
    assert sweep_status(sweep)[0].state == "done"


def test_failed_point_shows_train_errors_line(data_root, tmp_path, capsys) -> None:
    """A point train.py refuses while loading data: exit 1, and --status shows its error."""
    grid = {"data.lb_num": [4, 50]}  # siteA has 6 training images
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, grid, DEBUG)
    assert sweep_cli.main([str(path)]) == 1
    assert sweep_cli.main([str(path), "--status"]) == 0  # the done point is still summarised
    lines = capsys.readouterr().out.splitlines()
    failed = next(line for line in lines if "_n50_" in line)
    assert " failed " in failed and "train.py exited with 2: error: " in failed
    assert "50" in failed.split("error: ", 1)[1]
    assert "1 done, 1 failed" in "\n".join(lines)


def test_local_executor_runs_points_in_parallel_processes(data_root, tmp_path) -> None:
    executor = {"kind": "local", "workers": 2, "time": 10}
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, {"train.seed": [1, 2]}, executor)
    assert sweep_cli.main([str(path)]) == 0
    sweep = load_sweep(path)
    assert [s.state for s in sweep_status(sweep)] == ["done", "done"]
    records = yaml.safe_load((sweep.state_dir / "jobs.json").read_text())
    assert len({r["job_id"] for r in records.values()}) == 2  # one process per worker


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"grid": {"data.lb_dom": [1]}}, "unknown grid key 'data.lb_dom'"),
        ({"grid": {"method": ["supony"]}}, "grid key 'method': unknown 'supony'"),
        ({"grid": {"train.seed": []}}, "grid key 'train.seed': expected a non-empty list"),
        ({"executor": {"kind": "slurm", "time": 5}}, "executor slurm needs partition"),
        ({"executor": {"kind": "local"}}, "executor local needs workers"),
        ({"executor": {"kind": "pbs"}}, "executor.kind: expected one of slurm, local, debug"),
        ({"executor": {"kind": "debug", "gpus": 1}}, "executor debug: unknown field 'gpus'"),
        (
            {"executor": {"kind": "slurm", "partition": "gpu", "time": "1-00:00"}},
            "executor slurm: time: expected a whole number >= 1, got '1-00:00'",
        ),
        ({"executor": {"kind": "local", "workers": 0}}, "workers: expected a whole number >= 1"),
        ({"grid": {"train.seed": [1, 1]}}, "share the run folder"),
        ({"grid": {"method.alpha": ["fancy"]}}, "method.alpha"),
        ({"sweeps": []}, "unknown key 'sweeps'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_sweep_is_one_line_before_anything_runs(
    data_root, tmp_path, capsys, change, expected
) -> None:
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, {"train.seed": [1]}, DEBUG)
    raw = yaml.safe_load(path.read_text())
    raw.update(change)
    path.write_text(yaml.safe_dump(raw))
    assert sweep_cli.main([str(path)]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and expected in err, err
    assert not (tmp_path / "out").exists()


def test_unwritable_run_folder_is_one_line_before_anything_runs(data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder below a file cannot be made, even by root
    path = write_tiny_sweep(
        tmp_path / "s.yaml", data_root, {"train.seed": [1]}, DEBUG, out=str(blocker / "runs")
    )
    assert sweep_cli.main([str(path)]) == 2
    err = one_line_error(capsys)
    assert f"run folder {blocker / 'runs'} is not writable" in err


def test_executor_fields_can_be_overridden_on_the_command_line(data_root, tmp_path) -> None:
    slurm = {"kind": "slurm", "partition": "gpu", "time": 60}
    path = write_tiny_sweep(tmp_path / "s.yaml", data_root, {"train.seed": [1]}, slurm)
    changed = load_sweep(path, executor=["partition=a100", "sbatch={qos: high}"]).executor
    assert changed["partition"] == "a100" and changed["sbatch"] == {"qos": "high"}
    assert changed["time"] == 60 and changed["gpus"] == 0  # the file's and the defaults
    local = load_sweep(path, executor=["kind=local", "workers=2"]).executor
    assert local == {"kind": "local", "workers": 2, "device": "cpu", "time": 4320}


def test_missing_sweep_file_is_one_line(capsys, tmp_path) -> None:
    assert sweep_cli.main([str(tmp_path / "nope.yaml"), "--status"]) == 2
    assert "does not exist" in one_line_error(capsys)


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name
)
def test_paper_sweep_files_plan(path: Path) -> None:
    """Each shipped sweep file loads: keys, methods, executor, distinct run folders."""
    sweep = load_sweep(path)
    assert len(sweep.points) >= 4
    assert len({p.run_dir for p in sweep.points}) == len(sweep.points)
