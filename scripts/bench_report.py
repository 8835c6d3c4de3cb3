"""The bench's records as text and JSON: the aligned report, the JSON list that several calls
append to, and the throughput gain of two runs sharing one device (``scripts/gpu_checks.sh``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.host_profile import summary


def report(f: dict[str, Any]) -> str:
    """The figures of :func:`scripts.bench_timing.measure` as an aligned two-column table."""
    rows = [
        (
            "bench",
            f"{f['bench']}: {f['foundation']} {f['foundation_px']}px + U-Net {f['unet_px']}px "
            f"(width {f['unet_width']}), batch {f['batch'][0]}+{f['batch'][1]}"
            + (f", --set {' '.join(f['overrides'])}" if f["overrides"] else ""),
        ),
        (
            "device",
            f"{f['card']}, torch {f['torch']}, compile={f['compile']} "
            f"({f['compile_backend']}), deterministic={f['deterministic']}",
        ),
    ]
    if "ms_back_to_back" in f:  # not with --host_only or --rate_seconds
        rows += timing_rows(f)
    if "rate" in f:
        rate = f["rate"]
        rows.append(
            ("rate", f"{rate['iterations'] / rate['seconds']:.2f} iterations / s over "
                     f"{rate['seconds']:.1f} s")
        )  # fmt: skip
    if f["host"] is not None:
        rows.append(("host profile", summary(f["host"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def timing_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's rows of the timed figures."""
    memory = f"{f['peak_memory_gib']:.1f} GiB" if f["peak_memory_gib"] is not None else "-"
    mfu = (
        f"{f['mfu_percent']:.1f} % of {f['peak_tflops']:.0f}"
        if f["mfu_percent"] is not None
        else "- (peak unknown)"
    )
    phases = ", ".join(f"{k} {v:.1f}" for k, v in f["phases_ms"].items())
    busy = (
        f"{f['device_busy_ms']:.1f} ms of kernels per iteration (profile of 5), "
        f"{100 * f['device_busy_ms'] / f['ms_back_to_back']:.0f} % of back to back"
        if f["device_busy_ms"] is not None
        else "- (CUDA and --profile)"
    )
    return [
        (
            "ms / iteration",
            f"{f['ms_back_to_back']:.1f} back to back; {f['ms_median']:.1f} median synchronised "
            f"(p10 {f['ms_p10']:.1f}, p90 {f['ms_p90']:.1f}) over {f['iterations']} after "
            f"{f['warmup']} warm-up ({f['warmup_seconds']:.1f} s, compiling included)",
        ),
        ("images / s", f"{f['images_per_s']:.1f}"),
        ("peak GPU memory", memory),
        (
            "FLOPs / iteration",
            f"{f['gflop']:.1f} GFLOP -> {f['tflops_achieved']:.2f} TFLOP/s, MFU {mfu}",
        ),
        ("phases (ms)", f"{phases} (each synchronised; data already on the device)"),
        ("device busy", busy),
        (
            "operators",
            f"{f['ops_per_iteration']} dispatched per iteration, eager (each a host call, most a "
            "kernel launch)",
        ),
        (
            "evaluation",
            f"{f['eval_seconds']:.2f} s for {f['eval_slices']} test slices, {f['eval_domains']} "
            "domains, both students, all metrics",
        ),
        ("sync check", f["sync_check"]),
    ]


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append ``records`` to the JSON list at ``path`` (created if absent), so several bench
    calls (eager, compiled, other overrides) collect into one file."""
    previous = json.loads(path.read_text()) if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(previous + records, indent=1))


def pair_gain(solo: list[dict[str, float]], pair: list[dict[str, float]]) -> float:
    """Throughput of runs sharing one device relative to running them one after another: the
    time the solo rates need for the pair's iterations, over the time the pair took."""
    sequential = sum(p["iterations"] / (s["iterations"] / s["seconds"]) for s, p in zip(solo, pair))
    return sequential / max(p["seconds"] for p in pair)
