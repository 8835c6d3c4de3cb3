"""The bench's measurements on a built trainer: synchronised and back-to-back iteration times,
per-phase times, torch.profiler tables and the device's busy time, FLOP and operator counts, the
sync check, the iteration rate, and :func:`measure`, which gathers them into one record.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from engine.trainer import PHASES
from scripts.host_profile import host_profile, phase_hook, uncompiled
from utils.host_reads import HostReadRecorder

# Dense bf16 peak of the cards this project measures on (NVIDIA data sheets, SXM parts).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, *args):
    """(result of fn(*args), its synchronised wall-clock seconds)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn(*args)
    synchronize(device)
    return result, time.perf_counter() - start


def advance(trainer, count: int = 1) -> None:
    """``count`` training iterations as the training loop runs them between two log steps
    (``Trainer.iterate``: the step, the counter, the scalars and diagnostics summed on the
    device)."""
    for _ in range(count):
        trainer.iterate()


def time_iterations(trainer, count: int) -> list[float]:
    """Wall-clock seconds of ``count`` synchronised iterations."""
    return [timed(trainer.device, advance, trainer)[1] for _ in range(count)]


def time_back_to_back(trainer, count: int) -> float:
    """Mean seconds per iteration over ``count`` iterations with one synchronisation at the end:
    the rate a training run sees between two log steps (the host queues the next iteration while
    the device still works on this one)."""
    return timed(trainer.device, advance, trainer, count)[1] / count


def time_phases(trainer, count: int) -> dict[str, float]:
    """Median seconds of each phase of ``Trainer.iterate`` (``engine.trainer.PHASES``),
    synchronised around every phase (so their sum exceeds an unsynchronised iteration).
    ``batches`` = draw, gather, augment and resize one labeled and one unlabeled batch from the
    data already on the device; ``diagnostics`` = the scalars and pseudo-label Dice summed on
    the device."""
    times: dict[str, list[float]] = {name: [] for name in PHASES}

    @contextlib.contextmanager
    def timed_phase(name: str) -> Iterator[None]:
        synchronize(trainer.device)
        start = time.perf_counter()
        yield
        synchronize(trainer.device)
        times[name].append(time.perf_counter() - start)

    with phase_hook(trainer, timed_phase):
        advance(trainer, count)
    return {name: statistics.median(values) for name, values in times.items()}


def profile_iterations(trainer, count: int, path: Path) -> float | None:
    """torch.profiler over ``count`` iterations: the operators and kernels that take the most
    (device time on CUDA, CPU time otherwise) go to ``path`` as a table. Returns the device's
    busy seconds per iteration on CUDA (None elsewhere): to compare with the back-to-back time,
    whose excess over it is the device waiting for the host."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        advance(trainer, count)
        synchronize(trainer.device)
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    averages = profiler.key_averages()
    table = averages.table(sort_by=sort, row_limit=120, max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{count} iterations, sorted by {sort}\n{table}\n")
    return device_busy_seconds(averages) / count if cuda else None


def profile_name(name: str, compiled: bool, overrides: list[str]) -> str:
    """``profile_<bench>[_compile][_<override value>...].txt``: one file per variant, so the
    variants of one call do not overwrite each other's tables (characters other than letters,
    digits, '.', '_' and '-' become '-')."""
    values = [override.split("=", 1)[-1] for override in overrides]
    stem = "_".join([f"profile_{name}", *(["compile"] if compiled else []), *values])
    return re.sub(r"[^A-Za-z0-9._-]", "-", stem) + ".txt"


def device_busy_seconds(averages) -> float:
    """The profiler table's "Self CUDA time total" in seconds: the self time (µs) of the device
    events, i.e. the kernels and copies on the one stream the step uses. CPU operators also carry
    the device time of their kernels, so they are left out, as are user annotations."""
    from torch.autograd import DeviceType

    return (
        sum(
            event.self_device_time_total
            for event in averages
            if event.device_type != DeviceType.CPU
            and not getattr(event, "is_user_annotation", False)
        )
        / 1e6
    )


def advance_uncompiled(trainer, mode) -> None:
    """One iteration on the uncompiled networks and step inside ``mode`` (a counting dispatch
    mode, whose hooks would make torch.compile trace again)."""
    with uncompiled(trainer), mode:
        advance(trainer)


def count_flops(trainer) -> float:
    """FLOPs of one full iteration (forwards and backward), by torch's flop counter, on the
    uncompiled networks (the same arithmetic; the counter's hooks would make torch.compile trace
    again)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    advance_uncompiled(trainer, counter)
    return float(counter.get_total_flops())


def count_ops(trainer) -> int:
    """Operators dispatched in one full iteration, backward included: each is a host call of a
    few microseconds and most launch a kernel, so this bounds how fast an eager step can be
    issued. Counted on the uncompiled networks (compiled ones fuse many into one kernel)."""
    recorder = HostReadRecorder()
    advance_uncompiled(trainer, recorder)
    return recorder.calls


def sync_check(trainer, count: int) -> str:
    """Run ``count`` non-logging iterations with CUDA's sync debug mode set to raise."""
    if trainer.device.type != "cuda":
        return "skipped (no CUDA)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        advance(trainer, count)
    except RuntimeError as error:
        return f"FAILED: {error}".splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return f"passed ({count} iterations without a host synchronisation)"


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def describe(name: str, trainer, args: argparse.Namespace) -> dict[str, Any]:
    """What one bench runs: models, sizes, batch, overrides, card, torch, compile settings."""
    config, device = trainer.config, trainer.device
    return {
        "bench": name,
        "foundation": config.model.foundation,
        "foundation_px": trainer.sizes.foundation,
        "unet_px": trainer.sizes.patch,
        "unet_width": config.model.unet_width,
        "batch": [config.data.labeled_bs, config.data.unlabeled_bs],
        "overrides": list(args.set),
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "compile": args.compile,
        "compile_backend": args.compile_backend,
        "deterministic": args.deterministic,
        "warmup": args.warmup,
    }


def host_record(name: str, trainer, args: argparse.Namespace) -> dict[str, Any] | None:
    """With ``--host_profile DIR``: :func:`scripts.host_profile.host_profile` over
    ``--host_iterations`` iterations, its tables in ``DIR/host_<profile name>``."""
    if not args.host_profile:
        return None
    stem = profile_name(name, args.compile, args.set)
    path = Path(args.host_profile) / f"host_{stem}"
    return host_profile(trainer, args.host_iterations, path)


def iteration_rate(trainer, seconds: float, start_at: float | None) -> dict[str, float]:
    """Iterations per second over ``seconds`` of back-to-back training, starting at the Unix
    time ``start_at`` (if given), so that two processes on one GPU, started together, time the
    same window (``scripts/gpu_checks.sh`` measures a concurrent pair this way)."""
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    synchronize(trainer.device)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        advance(trainer, 5)
        synchronize(trainer.device)  # the device's work counts, not only the host's queue
        count += 5
    return {"iterations": count, "seconds": time.perf_counter() - start, "start_at": start_at}


def measure(name: str, trainer, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one bench, as plain numbers and strings (the JSON record); with
    ``--host_only`` the host profile alone, with ``--rate_seconds`` the iteration rate alone,
    after the warm-up."""
    device, config = trainer.device, trainer.config
    warmup = time_iterations(trainer, args.warmup)  # compiling happens here
    described = {**describe(name, trainer, args), "warmup_seconds": sum(warmup)}
    if args.host_only:
        return {**described, "host": host_record(name, trainer, args)}
    if args.rate_seconds:
        rate = iteration_rate(trainer, args.rate_seconds, args.start_at)
        return {**described, "host": None, "rate": rate}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_iterations(trainer, args.iterations)
    back_to_back = time_back_to_back(trainer, args.iterations)
    phases = time_phases(trainer, min(args.iterations, 20))
    flops = count_flops(trainer)
    ops = count_ops(trainer)
    busy = None
    if args.profile:
        path = Path(args.profile) / profile_name(name, args.compile, args.set)
        busy = profile_iterations(trainer, 5, path)
    sync = sync_check(trainer, 5) if args.sync_check else "not run (--sync_check)"
    synchronize(device)
    start = time.perf_counter()
    trainer.evaluate()
    synchronize(device)
    eval_seconds = time.perf_counter() - start
    median = statistics.median(times)
    deciles = statistics.quantiles(times, n=10) if len(times) >= 10 else [min(times), max(times)]
    peak = peak_tflops(device, args.peak_tflops)
    achieved = flops / back_to_back / 1e12
    host = host_record(name, trainer, args)
    return {
        **described,
        "iterations": len(times),
        "ms_median": 1000 * median,
        "ms_p10": 1000 * deciles[0],
        "ms_p90": 1000 * deciles[-1],
        "ms_back_to_back": 1000 * back_to_back,
        "images_per_s": (config.data.labeled_bs + config.data.unlabeled_bs) / back_to_back,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
        "gflop": flops / 1e9,
        "ops_per_iteration": ops,
        "tflops_achieved": achieved,
        "mfu_percent": 100 * achieved / peak if peak else None,
        "peak_tflops": peak,
        "phases_ms": {k: 1000 * v for k, v in phases.items()},
        "device_busy_ms": None if busy is None else 1000 * busy,
        "eval_seconds": eval_seconds,
        "eval_slices": sum(len(d) for d in trainer.eval_sets.values()),
        "eval_domains": len(trainer.eval_sets),
        "sync_check": sync,
        "host": host,
    }
