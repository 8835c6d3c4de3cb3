"""Running a sweep's points through submitit, and reading back where each point stands.

A point runs as ``train.main(point.argv())`` (the same code path as ``python train.py``) with
``--auto_resume``: a re-run continues the point's folder from ``checkpoints/last.pt``. The job is a
:class:`submitit.helpers.Checkpointable`, so on a Slurm time-out or preemption (USR2, sent
``signal_delay_s`` before the limit) submitit requeues the same call, which resumes the run from
its last checkpoint; at most ``train.checkpoint_interval`` iterations are trained twice.

Job records (executor, job id, submitit log) live in ``<out>/.sweep/jobs.json``; a failed point's
error line in ``<out>/.sweep/errors/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

import train
from scripts.sweep_plan import Point, Sweep, SweepError

REPO = Path(__file__).resolve().parents[1]
QUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING")


def error_file(state_dir: Path, point: Point) -> Path:
    """Where a failed point leaves its error line (removed when the point runs again)."""
    return state_dir / "errors" / (point.key.replace("/", "__") + ".txt")


def is_done(point: Point) -> bool:
    """A point is done when its run evaluated its last step (``eval/<max_iterations>.json``)."""
    return (point.run_dir / "eval" / f"{point.max_iterations}.json").is_file()


class _Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy, to report train.py's one-line error."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class TrainPoint(submitit.helpers.Checkpointable):
    """One point as a submitit job; ``checkpoint`` (inherited) requeues the same call."""

    def __init__(self, point: Point, state_dir: Path) -> None:
        self.point, self.state_dir = point, state_dir

    def __call__(self) -> str:
        """Train the point (or resume it); skip it when done. Raises RuntimeError on failure."""
        errors = error_file(self.state_dir, self.point)
        errors.unlink(missing_ok=True)
        if is_done(self.point):
            return f"{self.point.run_dir}: done"
        tee = _Tee(sys.stderr)
        with contextlib.redirect_stderr(tee):
            code = train.main(self.point.argv())
        if code != 0:
            lines = tee.copy.getvalue().strip().splitlines() or ["no error output"]
            message = f"train.py exited with {code}: {lines[-1]}"
            errors.parent.mkdir(parents=True, exist_ok=True)
            errors.write_text(message + "\n")
            raise RuntimeError(f"{self.point.run_dir}: {message}")
        return f"{self.point.run_dir}: done"


class PointSequence(submitit.helpers.Checkpointable):
    """Several points one after the other in one job (a local worker); a failed point does not
    stop the others. Requeued, it runs them all again: the finished ones are skipped."""

    def __init__(self, points: list[TrainPoint]) -> None:
        self.points = points

    def __call__(self) -> list[str]:
        results, failures = [], []
        for point in self.points:
            try:
                results.append(point())
            except RuntimeError as error:
                failures.append(str(error))
        if failures:
            raise RuntimeError(f"{len(failures)} point(s) failed; first: {failures[0]}")
        return results


# ------------------------------------------------------------------------------------ job records
def records_file(sweep: Sweep) -> Path:
    return sweep.state_dir / "jobs.json"


def read_records(sweep: Sweep) -> dict[str, dict[str, str]]:
    """``{point key: {"executor", "job_id", "log"}}`` of the jobs submitted so far."""
    path = records_file(sweep)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_records(sweep: Sweep, records: dict[str, dict[str, str]]) -> None:
    """Merge ``records`` into jobs.json (written whole, then renamed into place)."""
    merged = {**read_records(sweep), **records}
    path = records_file(sweep)
    path.with_suffix(".tmp").write_text(json.dumps(merged, indent=1, sort_keys=True))
    path.with_suffix(".tmp").replace(path)


def _record(kind: str, job: submitit.Job) -> dict[str, str]:
    return {"executor": kind, "job_id": str(job.job_id), "log": str(job.paths.stderr)}


# -------------------------------------------------------------------------------------- executors
def _job_setup(cpus: int) -> list[str]:
    """Shell lines run before each job: the repository importable, threads = the CPUs given."""
    return [
        f"cd {REPO}",
        f'export PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"',
        f"export OMP_NUM_THREADS={cpus}",
    ]


def slurm_executor(sweep: Sweep) -> submitit.SlurmExecutor:
    """A submitit SlurmExecutor for the sweep's ``executor`` section."""
    spec = sweep.executor
    for command in ("sbatch", "srun"):
        if shutil.which(command) is None:
            raise SweepError(
                f"{sweep.path}: executor slurm: {command} not found on PATH (submit from a Slurm "
                "login node, or use executor kind local)"
            )
    executor = submitit.SlurmExecutor(sweep.state_dir / "slurm" / "%j", spec["requeues"])
    parameters = {
        "partition": spec["partition"],
        "time": int(spec["time"]),
        "cpus_per_task": int(spec["cpus"]),
        "account": spec["account"],
        "gpus_per_node": int(spec["gpus"]) or None,
        "mem": f"{spec['mem_gb']}GB" if spec["mem_gb"] else None,
        "signal_delay_s": int(spec["signal_delay_s"]),
        "job_name": f"sweep-{sweep.path.stem}",
        "setup": _job_setup(int(spec["cpus"])),
        "additional_parameters": dict(spec["sbatch"]),
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor


def submit_slurm(sweep: Sweep, points: list[Point]) -> dict[str, dict[str, str]]:
    """One Slurm job per point; returns their records."""
    executor = slurm_executor(sweep)
    records = {}
    for point in points:
        job = executor.submit(TrainPoint(point, sweep.state_dir))
        records[point.key] = _record("slurm", job)
    return records


def run_local(sweep: Sweep, points: list[Point]) -> list[str]:
    """``workers`` local processes (GPU i for worker i with ``device: gpu``), each running its
    share of the points in turn; waits for them (at most ``time`` minutes, then submitit stops
    them) and returns the failures."""
    spec = sweep.executor
    workers = max(1, min(int(spec["workers"]), len(points)))
    executor = submitit.LocalExecutor(sweep.state_dir / "local" / "%j")
    jobs = []
    for worker in range(workers):
        gpu = spec["device"] == "gpu"
        executor.update_parameters(
            timeout_min=float(spec["time"]),
            gpus_per_node=1 if gpu else 0,
            visible_gpus=(worker,) if gpu else (),
            setup=_job_setup(1),
        )
        share = [TrainPoint(p, sweep.state_dir) for p in points[worker::workers]]
        job = executor.submit(PointSequence(share))
        jobs.append(job)
        write_records(sweep, {p.point.key: _record("local", job) for p in share})
    return [str(job.exception()) for job in jobs if job.exception() is not None]


def run_debug(sweep: Sweep, points: list[Point]) -> list[str]:
    """Every point in this process, one after the other; returns the failures."""
    failures = []
    for point in points:
        try:
            TrainPoint(point, sweep.state_dir)()
        except RuntimeError as error:
            failures.append(str(error))
    return failures


# ------------------------------------------------------------------------------------------ status
@dataclass(frozen=True)
class Status:
    state: str  # done | running | failed | pending (or unknown when Slurm cannot be asked)
    detail: str
    live: bool = False  # a job of the point runs or waits in the queue: do not start another


def slurm_queue() -> dict[str, str] | str:
    """``{job id: state}`` of the jobs Slurm knows, or why it could not be asked."""
    try:
        result = subprocess.run(
            ["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"squeue failed: {error}"
    if result.returncode != 0:
        return f"squeue failed: {result.stderr.strip()}"
    return dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line.strip())


def _last_line(path: Path) -> str | None:
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        lines = handle.read().decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else None


def logged_step(point: Point) -> str:
    """``step k/N`` of the last step the run logged, or ``not started``."""
    log = point.run_dir / "train.log"
    if not log.is_file():
        return "not started"
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - 65536))
        steps = re.findall(rb"step (\d+)/(\d+)", handle.read())
    return f"step {steps[-1][0].decode()}/{point.max_iterations}" if steps else "started"


def _job_alive(record: dict[str, str], queue: dict[str, str] | str) -> tuple[bool, str]:
    """Whether the job still runs (or waits in the queue), and a word on its state."""
    if record["executor"] == "local":
        try:
            os.kill(int(record["job_id"]), 0)
        except (ProcessLookupError, ValueError):
            return False, "ended"
        return True, "RUNNING"
    if isinstance(queue, str):
        return False, queue
    state = queue.get(record["job_id"])
    return state is not None, state or "ended"


def point_status(
    sweep: Sweep, point: Point, record: dict[str, str] | None, queue: dict[str, str] | str
) -> Status:
    """Where one point stands, from its run folder, its job record and the queue."""
    if is_done(point):
        return Status("done", logged_step(point))
    step = logged_step(point)
    if record is not None:
        alive, state = _job_alive(record, queue)
        job = f"{record['executor']} job {record['job_id']}"
        if record["executor"] == "slurm" and isinstance(queue, str):
            return Status("unknown", f"{job}: {state}", live=True)
        if alive:
            word = "pending" if state in QUEUED_STATES else "running"
            return Status(word, f"{job} {state}, {step}", live=True)
    why = _last_line(error_file(sweep.state_dir, point))
    why = why or _last_line(point.run_dir / "train.log")
    why = why or (_last_line(Path(record["log"])) if record else None)
    if why is None:
        return Status("pending", "not submitted")
    return Status("failed", f"{step}: {why}")


def sweep_status(sweep: Sweep) -> list[Status]:
    """The status of every point, in the sweep's order."""
    records = read_records(sweep)
    queue: dict[str, str] | str = {}
    if any(r["executor"] == "slurm" for r in records.values()):
        queue = slurm_queue()
    return [point_status(sweep, p, records.get(p.key), queue) for p in sweep.points]
