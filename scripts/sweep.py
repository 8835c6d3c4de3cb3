"""Run a grid of train.py runs (a paper table, a seed study) on Slurm, locally, or in-process.

    python -m scripts.sweep configs/sweeps/busi_seeds.yaml            # submit what is not done
    python -m scripts.sweep configs/sweeps/busi_seeds.yaml --dry-run  # the runs and their folders
    python -m scripts.sweep configs/sweeps/busi_seeds.yaml --status   # done/running/failed/pending
    python -m scripts.sweep configs/sweeps/prostate.yaml --set data.root=/data/ProstateSlice
    python -m scripts.sweep configs/sweeps/busi.yaml --executor partition=a100 --executor time=600

A sweep file:

    config: configs/busi.yaml          # base config (paths relative to the current folder)
    out: runs/sweeps/busi_seeds        # default runs/sweeps/<file name>
    set: {model.foundation: litemedsam}    # overrides for every point
    grid:                              # one run per combination, in this order
      data.lb_domain: [benign, malignant]  # any config key (section.key)
      method: [suponly, synfoc]        # names for the --set switches of a method (METHODS)
      train.seed: [1, 2, 3]            # also "config: [a.yaml, b.yaml]" for several datasets
    executor:
      kind: slurm                      # slurm | local | debug
      partition: gpu                   # slurm: partition and time (minutes per job) required;
      time: 1440                       # gpus, cpus, mem_gb, account, requeues, signal_delay_s
      gpus: 1                          # and sbatch (any other sbatch flags) optional

``local`` needs ``workers`` (processes at once; ``device: gpu`` gives worker i GPU i, ``cpu``
none; ``time`` in minutes bounds each worker) and waits for them; ``debug`` trains every point in
this process (tests). Each point trains through train.py's own ``main`` with ``--out
<out>/<dataset>/<train.py's default run name> --auto_resume``: rerunning the sweep skips the done
points, leaves the running ones alone and resumes the others from their last checkpoint; Slurm
time-outs and preemptions requeue the job, which resumes the same way. ``--status`` ends with the
table of the done points (``scripts/summarize.py --by_labeled_domain``: mean ± std over seeds),
also written to ``<out>/summary.md`` and ``.csv``.

Bad input (an unknown key, a grid key that is not a config key, an executor without its required
fields, a run folder that cannot be written, a point train.py would refuse) is one line on stderr
and exit code 2, before anything is submitted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from scripts import summarize
from scripts.sweep_jobs import (
    Status,
    is_done,
    run_debug,
    run_local,
    submit_slurm,
    sweep_status,
    write_records,
)
from scripts.sweep_plan import Point, Sweep, SweepError, check_writable, load_sweep


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", help="sweep file (configs/sweeps/<name>.yaml)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print the runs, submit nothing")
    action.add_argument("--status", action="store_true", help="where every point stands")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key for every point (repeatable)",
    )
    parser.add_argument(
        "--executor",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the executor section, e.g. partition=a100 or kind=local "
        "(another kind replaces the section: give its required fields too)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="after submitting to Slurm, wait at most SECONDS for every point to end",
    )
    return parser.parse_args(argv)


def print_points(sweep: Sweep) -> None:
    """The dry run: each point's grid values, run folder, and whether a run would skip it."""
    kind = sweep.executor["kind"]
    print(f"{len(sweep.points)} runs, executor {kind}, run folders under {sweep.out}:")
    for point in sweep.points:
        mark = "  [done, skipped]" if is_done(point) else ""
        print(f"  {point.label}\n    -> {point.run_dir}{mark}")


def print_status(sweep: Sweep, statuses: list[Status]) -> None:
    """One line per point, then the counts of each state."""
    width = max(len(p.key) for p in sweep.points)
    for point, status in zip(sweep.points, statuses):
        print(f"{point.key:<{width}}  {status.state:<7}  {status.detail}")
    counts = Counter(s.state for s in statuses)
    order = ("done", "running", "failed", "pending", "unknown")
    print(f"{len(statuses)} points: " + ", ".join(f"{counts[s]} {s}" for s in order if counts[s]))


def summarize_done(sweep: Sweep) -> int:
    """The paper-style table of the done points (mean ± std over seeds), or 0 if none is done."""
    done = [str(p.run_dir) for p in sweep.points if is_done(p)]
    if not done:
        return 0
    print()
    return summarize.main([*done, "--by_labeled_domain", "--out", str(sweep.out / "summary")])


def to_run(sweep: Sweep) -> list[Point]:
    """The points a submission should start: not done, and no live job on them."""
    statuses = sweep_status(sweep)
    return [p for p, s in zip(sweep.points, statuses) if s.state != "done" and not s.live]


def wait_for_sweep(sweep: Sweep, timeout_s: float, poll_s: float = 2.0) -> list[Status]:
    """Poll the points until none is running or queued, at most ``timeout_s``.

    Raises:
        TimeoutError: naming how many points still run when the time is up.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = sweep_status(sweep)
        waiting = sum(s.live for s in statuses)
        if not waiting:
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} point(s) still running after {timeout_s:.0f} s")
        time.sleep(poll_s)


def submit(sweep: Sweep, wait_s: float | None) -> int:
    """Start the points that need it with the sweep's executor; 1 if any of them failed."""
    check_writable(sweep)
    points = to_run(sweep)
    kind = sweep.executor["kind"]
    skipped = len(sweep.points) - len(points)
    print(f"{len(points)} of {len(sweep.points)} runs to start ({skipped} done or running)")
    if not points:
        return 0
    if kind == "slurm":
        records = submit_slurm(sweep, points)
        write_records(sweep, records)
        ids = [r["job_id"] for r in records.values()]
        print(f"submitted Slurm jobs {', '.join(ids)}; follow with --status")
        if wait_s is None:
            return 0
        statuses = wait_for_sweep(sweep, wait_s)
        return int(any(s.state != "done" for s in statuses))
    failures = run_local(sweep, points) if kind == "local" else run_debug(sweep, points)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return int(bool(failures))


def main(argv: list[str] | None = None) -> int:
    """Submit, dry-run or report a sweep; 2 with a one-line error on bad input."""
    args = parse_args(argv)
    try:
        sweep = load_sweep(args.sweep, args.set, args.executor)
        if args.dry_run:
            print_points(sweep)
            return 0
        if args.status:
            print_status(sweep, sweep_status(sweep))
            return summarize_done(sweep)
        return submit(sweep, args.wait)
    except (SweepError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
