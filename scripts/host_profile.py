"""The host's side of training iterations: what the Python process does per iteration.

Used by ``scripts/bench.py --host_profile DIR``; runs on the CPU and on CUDA. Per iteration:

- **host time**: wall-clock (``perf_counter``) and CPU (``process_time``) seconds until
  ``Trainer.iterate`` returns, the device idle at the start. On CUDA that is the time the host
  needs to issue the iteration; on the CPU it includes the kernels' own arithmetic.
- **operators dispatched**, per phase (``engine.trainer.PHASES``), on the uncompiled step: each is
  a host call and most launch a kernel on a GPU (``utils.host_reads.HostReadRecorder``), with the
  host reads it finds (none may occur in an iteration);
- **profiler counts**: ATen operators called from Python (top level, not those inside another
  operator) and how many of them run outside a compiled graph, i.e. what the host still issues
  one by one with ``train.compile_scope=step``; on CUDA also kernel launches, CUDA graph
  launches, copies and explicit synchronisations;
- **Python**: function calls and interpreter seconds by ``cProfile`` (its own overhead inflates
  the time; the counts are exact), ``nn.Module`` calls, and the top functions and files, written
  to ``DIR/host_profile_<variant>.txt``;
- **the logging interval's work** (``Trainer.write_logs``: the meter's read-back, TensorBoard,
  histograms, the per-domain pseudo-label Dice), timed and counted once and divided by
  ``train.log_interval``;
- on CUDA, the synchronisations that ``torch.cuda.set_sync_debug_mode("warn")`` reports.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from engine.trainer import PHASES, untimed_phase
from method.step import synfoc_step
from utils.host_reads import HostReadRecorder

# CUDA runtime and driver calls in a torch.profiler trace, by what they do.
LAUNCH_EVENTS = {"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"}
SYNC_EVENTS = {
    "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"
}  # fmt: skip
CUDA_EVENTS = {
    "kernel_launches": LAUNCH_EVENTS,
    "graph_launches": {"cudaGraphLaunch"},
    "copies": {"cudaMemcpyAsync", "cudaMemsetAsync"},
    "synchronisations": SYNC_EVENTS,
}
# Profiler ranges that mark code running inside a torch.compile graph, forward or backward.
COMPILED_MARKS = ("Torch-Compiled Region", "CompiledFunction")
TOP_ROWS = 15


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def uncompiled(trainer) -> Iterator[None]:
    """The trainer's original networks and step inside: a dispatch mode's or counter's hooks
    would make torch.compile trace again."""
    compiled = trainer.step_models, trainer.step_fn
    trainer.step_models, trainer.step_fn = trainer.models, synfoc_step
    try:
        yield
    finally:
        trainer.step_models, trainer.step_fn = compiled


def host_times(trainer, count: int) -> dict[str, float]:
    """Median wall and CPU ms until ``iterate`` returns, the device synchronised before each."""
    wall, cpu = [], []
    for _ in range(count):
        synchronize(trainer.device)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        trainer.iterate()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    synchronize(trainer.device)
    return {"wall_ms": 1000 * statistics.median(wall), "cpu_ms": 1000 * statistics.median(cpu)}


@contextlib.contextmanager
def phase_hook(trainer, hook: Callable[[str], contextlib.AbstractContextManager]) -> Iterator[None]:
    """``trainer.phase`` set to ``hook`` inside."""
    trainer.phase = hook
    try:
        yield
    finally:
        trainer.phase = untimed_phase


def dispatch_counts(trainer, count: int) -> dict[str, Any]:
    """Operators dispatched per iteration and phase on the uncompiled step, the most frequent
    ones per phase, and every host read found (file:line of the caller)."""
    recorders = {name: HostReadRecorder() for name in PHASES}
    with uncompiled(trainer), phase_hook(trainer, recorders.__getitem__):
        for _ in range(count):
            trainer.iterate()
    return {
        "ops_per_phase": {name: r.calls / count for name, r in recorders.items()},
        "ops_per_iteration": sum(r.calls for r in recorders.values()) / count,
        "top_ops": {name: r.ops.most_common(TOP_ROWS) for name, r in recorders.items()},
        "host_reads": list(dict.fromkeys(read for r in recorders.values() for read in r.reads)),
    }


def _ancestors(event) -> Iterator[Any]:
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def profiler_counts(trainer, count: int) -> dict[str, float]:
    """Per iteration, from a torch.profiler trace of ``count`` iterations as they run (compiled
    or not): top-level ATen operators, those of them outside any compiled graph, and on CUDA the
    runtime calls of :data:`CUDA_EVENTS`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        for _ in range(count):
            trainer.iterate()
        synchronize(trainer.device)
    counts: Counter[str] = Counter()
    for event in profiler.events():
        for key, names in CUDA_EVENTS.items():
            counts[key] += event.name in names
        if not event.name.startswith("aten::"):
            continue
        ancestors = [a.name for a in _ancestors(event)]
        if any(name.startswith("aten::") for name in ancestors):
            continue  # called by another operator, not by Python
        counts["top_level_ops"] += 1
        counts["ops_outside_graphs"] += not any(
            mark in name for name in ancestors for mark in COMPILED_MARKS
        )
    keys = ["top_level_ops", "ops_outside_graphs"]
    keys += list(CUDA_EVENTS) if trainer.device.type == "cuda" else []
    return {key: counts[key] / count for key in keys}


def python_profile(trainer, count: int) -> tuple[dict[str, float], str]:
    """cProfile over ``count`` iterations: per iteration the Python function calls, the
    interpreter's own seconds (functions written in Python, not the C functions they call),
    the seconds inside C functions (torch's operators among them) and ``nn.Module`` calls; and
    the text of the top functions by own and cumulative time and of the top files."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        trainer.iterate()
    synchronize(trainer.device)
    profiler.disable()
    stats = pstats.Stats(profiler)
    python = builtin = 0.0
    module_calls = 0
    by_file: Counter[str] = Counter()
    for (file, _, function), (_, calls, own, _, _) in stats.stats.items():
        if file == "~":  # C functions: torch's bindings, builtins
            builtin += own
            continue
        python += own
        by_file[_short_path(file)] += own
        if function == "_call_impl" and file.endswith("torch/nn/modules/module.py"):
            module_calls += calls
    figures = {
        "python_calls": stats.total_calls / count,
        "python_ms": 1000 * python / count,
        "c_functions_ms": 1000 * builtin / count,
        "module_calls": module_calls / count,
    }
    return figures, _stats_text(stats, by_file, count)


def _short_path(file: str) -> str:
    """``torch/nn/modules/module.py`` for installed packages, the repository-relative path
    otherwise."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in file:
            return file.split(marker, 1)[1]
    root = str(Path(__file__).resolve().parents[1]) + "/"
    return file.removeprefix(root)


def _stats_text(stats: pstats.Stats, by_file: Counter[str], count: int) -> str:
    text = io.StringIO()
    stats.stream = text
    for order in ("tottime", "cumulative"):
        print(f"--- top {TOP_ROWS} functions by {order}, {count} iterations", file=text)
        stats.sort_stats(order).print_stats(TOP_ROWS)
    print(f"--- top {TOP_ROWS} files by own Python time, ms per iteration", file=text)
    for file, seconds in by_file.most_common(TOP_ROWS):
        print(f"{1000 * seconds / count:10.2f}  {file}", file=text)
    return text.getvalue()


def log_interval_cost(trainer) -> dict[str, Any]:
    """One ``Trainer.write_logs`` after an iteration (the meter then holds one step; its read-back
    costs the same for 50), timed and counted; divided by ``train.log_interval`` for the
    per-iteration share. Its host reads are the interval's one intended read-back."""
    out = trainer.iterate()
    recorder = HostReadRecorder()
    with uncompiled(trainer):
        synchronize(trainer.device)
        start = time.perf_counter()
        with recorder:
            trainer.write_logs(out, tqdm(disable=True))
        synchronize(trainer.device)
        seconds = time.perf_counter() - start
    interval = trainer.config.train.log_interval
    return {
        "ms": 1000 * seconds,
        "ops": recorder.calls,
        "host_reads": len(recorder.reads),
        "interval": interval,
        "ms_per_iteration": 1000 * seconds / interval,
        "ops_per_iteration": recorder.calls / interval,
    }


def sync_warnings(trainer, count: int) -> int | None:
    """Synchronisations that CUDA's sync debug mode reports over ``count`` iterations as they
    run (compiled or not); None off CUDA."""
    if trainer.device.type != "cuda":
        return None
    synchronize(trainer.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(count):
                trainer.iterate()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def host_profile(trainer, count: int, path: Path) -> dict[str, Any]:
    """Every figure of the module docstring over ``count`` iterations each (after the bench's
    warm-up); the tables go to ``path``."""
    dispatch = dispatch_counts(trainer, count)
    python, stats_text = python_profile(trainer, count)
    record = {
        "iterations": count,
        **host_times(trainer, count),
        **{k: v for k, v in dispatch.items() if k != "top_ops"},
        **profiler_counts(trainer, count),
        **python,
        "log": log_interval_cost(trainer),
        "sync_warnings": sync_warnings(trainer, count),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_report_text(record, dispatch["top_ops"]) + "\n" + stats_text)
    return record


def _report_text(record: dict[str, Any], top_ops: dict[str, list]) -> str:
    lines = [f"host profile, per iteration over {record['iterations']} iterations"]
    lines += [f"{k}: {v}" for k, v in record.items() if k not in ("iterations", "host_reads")]
    lines.append(f"host reads in the iteration: {record['host_reads'] or 'none'}")
    for phase, ops in top_ops.items():
        lines.append(f"--- most frequent operators, {phase} ({record['ops_per_phase'][phase]:.0f})")
        lines += [f"{calls / record['iterations']:8.1f}  {name}" for name, calls in ops]
    return "\n".join(lines)


def summary(host: dict[str, Any]) -> str:
    """One line for the bench's report."""
    phases = ", ".join(f"{k} {v:.0f}" for k, v in host["ops_per_phase"].items())
    log = host["log"]
    return (
        f"{host['wall_ms']:.1f} ms wall, {host['cpu_ms']:.1f} ms CPU until iterate() returns; "
        f"{host['ops_per_iteration']:.0f} operators ({phases}); "
        f"{host['top_level_ops']:.0f} called from Python, {host['ops_outside_graphs']:.0f} outside "
        f"compiled graphs; {host['python_calls']:.0f} Python calls, {host['python_ms']:.1f} ms "
        f"in Python (cProfile), {host['module_calls']:.0f} module calls; log every "
        f"{log['interval']}: {log['ms']:.1f} ms, {log['ops']} operators; host reads: "
        f"{len(host['host_reads']) or 'none'}"
        + (
            f"; kernel launches {host['kernel_launches']:.0f}, graph launches "
            f"{host['graph_launches']:.0f}, sync warnings {host['sync_warnings']}"
            if host["sync_warnings"] is not None
            else ""
        )
    )
