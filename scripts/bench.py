"""Time full SynFoC training iterations and one evaluation pass on whatever device is present.

    python scripts/bench.py --bench prostate        # ViT-B 512 + U-Net 384, batch 4+4 (GPU)
    python scripts/bench.py --bench busi            # LiteMedSAM 256 + U-Net 256, batch 4+4
    python scripts/bench.py --bench tiny            # tiny models, for a CPU
    python scripts/bench.py --bench prostate --sync_check --compile

Everything runs through the real code paths: the trainer's data on the device, its device-side
augmentation, ``synfoc_step``, backward, both optimizers and the EMA updates, then the same
``evaluate`` the trainer and test.py use. Data are written to a temporary folder in the dataset's
native layout (random blobs, correct mask encodings), sized like the real sets; the MedSAM ViT-B
uses ``checkpoints/medsam_vit_b.pth`` when present and random weights (``vit_b_random``) otherwise,
which costs the same time.

Printed: ms per iteration back to back (the goal figure) and the synchronised median with its
10th/90th percentiles, images per second, peak GPU memory, the FLOPs of one iteration (counted by
``torch.utils.flop_counter``) with the achieved TFLOP/s and an MFU estimate, the median ms of each
phase (batches, forward, backward, optimizers + EMA), with ``--profile`` on CUDA the kernels' busy
time per iteration (its gap to the back-to-back time is the device waiting for the host), and the
time of one evaluation pass over the bench's test set (prostate 300, busi 36, tiny 12 slices).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.specs import DatasetSpec, get_spec  # noqa: E402
from engine.config import Config, load_config  # noqa: E402
from engine.trainer import PHASES  # noqa: E402
from scripts.host_profile import host_profile, phase_hook, summary, uncompiled  # noqa: E402
from utils.host_reads import HostReadRecorder  # noqa: E402

# bench name -> (config file, overrides, train images per domain, test images per domain)
BENCHES = {
    "prostate": ("configs/prostate.yaml", ["model.foundation=vit_b_random"], 40, 50),
    "busi": ("configs/busi.yaml", ["model.foundation=litemedsam"], 40, 50),
    # The paper's fundus and M&Ms settings (MedSAM ViT-B), timed compiled on a GPU.
    "fundus": ("configs/fundus.yaml", ["model.foundation=vit_b_random"], 40, 50),
    "mnms": ("configs/mnms.yaml", ["model.foundation=vit_b_random"], 40, 50),
    "tiny": (
        "configs/demo.yaml",
        ["model.foundation=tiny", "model.image_size=64", "model.unet_width=8",
         "data.patch_size=64", "data.labeled_bs=2", "data.unlabeled_bs=2"],
        8, 4,
    ),
}  # fmt: skip
MEDSAM_CHECKPOINT = Path("checkpoints/medsam_vit_b.pth")
# Dense bf16 peak of the cards this project measures on (NVIDIA data sheets, SXM parts).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _raw_value(spec: DatasetSpec, class_index: int):
    return next(raw for raw, index in spec.mask_encoding if index == class_index)


def _sample(
    spec: DatasetSpec, rng: np.random.Generator, size: int
) -> tuple[Image.Image, Image.Image]:
    """One image with an ellipse per foreground class, and its mask in the spec's raw encoding."""
    yy, xx = np.mgrid[:size, :size] / size
    image = rng.normal(60, 12, (size, size))
    classes = np.zeros((size, size), np.uint8)
    for index in range(1, spec.num_classes + 1):
        cy, cx, ry, rx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), *rng.uniform(0.08, 0.25, 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        classes[inside] = index
        image[inside] += 40 * index
    raw = np.zeros((size, size, 3) if spec.mask_mode == "RGB" else (size, size), np.uint8)
    for index in range(spec.num_classes + 1):
        raw[classes == index] = _raw_value(spec, index)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    mode = "L" if spec.in_channels == 1 else "RGB"
    picture = Image.fromarray(pixels).convert(mode)
    return picture, Image.fromarray(raw, spec.mask_mode)


def write_fake_dataset(spec: DatasetSpec, root: Path, train: int, test: int, size: int) -> Path:
    """Random-blob data in ``spec``'s native layout (split folders or class folders)."""
    rng = np.random.default_rng(0)
    for domain in spec.domains:
        if spec.layout == "class_folders":
            folder = root / domain
            folder.mkdir(parents=True)
            for i in range(1, train + test + 1):  # the spec's test_fraction splits them
                image, mask = _sample(spec, rng, size)
                image.save(folder / f"{domain} ({i}).png")
                mask.save(folder / f"{domain} ({i}){spec.mask_suffix}.png")
            continue
        for split, count in (("train", train), ("test", test)):
            images = root / domain / split / spec.image_subdir
            masks = root / domain / split / spec.mask_subdir
            images.mkdir(parents=True)
            masks.mkdir(parents=True)
            for i in range(count):
                image, mask = _sample(spec, rng, size)
                image.save(images / f"{i:04d}.png")
                mask.save(masks / f"{i:04d}.png")
    return root


def bench_config(name: str, root: Path, args: argparse.Namespace) -> Config:
    path, overrides, _, _ = BENCHES[name]
    overrides = [
        *overrides,
        f"data.root={root}",
        f"data.lb_num={BENCHES[name][2] // 2}",
        f"train.device={args.device}",
        "train.max_iterations=1000000",
        f"train.compile={args.compile}",
        f"train.deterministic={args.deterministic}",
        *args.set,
    ]
    config = load_config(path, overrides)
    # Same architecture and cost; the MedSAM weights only when they are on disk.
    if config.model.foundation == "vit_b_random" and MEDSAM_CHECKPOINT.is_file():
        config.model.foundation, config.model.checkpoint = "medsam_vit_b", str(MEDSAM_CHECKPOINT)
    return config


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


def pair_gain(solo: list[dict[str, float]], pair: list[dict[str, float]]) -> float:
    """Throughput of runs sharing one device relative to running them one after another: the
    time the solo rates need for the pair's iterations, over the time the pair took."""
    sequential = sum(p["iterations"] / (s["iterations"] / s["seconds"]) for s, p in zip(solo, pair))
    return sequential / max(p["seconds"] for p in pair)


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


def report(f: dict[str, Any]) -> str:
    """The figures of :func:`measure` as an aligned two-column table."""
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


@contextlib.contextmanager
def compile_backend(backend: str) -> Iterator[None]:
    """``torch.compile`` with ``backend`` while the trainer compiles its networks or step
    (the trainer names no backend: Inductor)."""
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from engine.trainer import Trainer

    spec = get_spec(load_config(BENCHES[name][0]).data.dataset)
    _, _, train, test = BENCHES[name]
    with tempfile.TemporaryDirectory() as tmp:
        size = max(spec.patch_size, 256) if name != "tiny" else 64
        root = write_fake_dataset(spec, Path(tmp) / "data", train, test, size)
        config = bench_config(name, root, args)
        with compile_backend(args.compile_backend):
            trainer = Trainer(config, Path(tmp) / "run", progress=False)
        trainer.train_modes()
        return measure(name, trainer, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", nargs="+", default=["tiny"], choices=list(BENCHES))
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every bench, e.g. method.supervised_only=true (repeatable)",
    )
    parser.add_argument(
        "--sync_check",
        action="store_true",
        help="run 5 iterations with torch.cuda.set_sync_debug_mode('error')",
    )
    parser.add_argument("--peak_tflops", type=float, help="the card's dense bf16 peak, for MFU")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write profile_<bench>[_compile][_<override value>...].txt tables here",
    )
    parser.add_argument("--json", metavar="PATH", help="also append all figures to this JSON list")
    parser.add_argument(
        "--host_profile",
        metavar="DIR",
        help="also profile the host's side of the iterations (scripts/host_profile.py); tables "
        "to DIR/host_profile_<bench>[_compile][_<override value>...].txt",
    )
    parser.add_argument(
        "--host_iterations", type=int, default=3, help="iterations per host-profile measurement"
    )
    parser.add_argument(
        "--host_only",
        action="store_true",
        help="after the warm-up only the host profile (for slow CPUs); needs --host_profile",
    )
    parser.add_argument(
        "--compile_backend",
        default="inductor",
        help="torch.compile backend, e.g. aot_eager on a CPU, where Inductor's code generation "
        "takes minutes (the same graphs, run by eager kernels)",
    )
    parser.add_argument(
        "--rate_seconds",
        type=float,
        help="after the warm-up only the iteration rate over this many seconds",
    )
    parser.add_argument(
        "--start_at", type=float, help="with --rate_seconds: start timing at this Unix time"
    )
    args = parser.parse_args(argv)
    if args.host_only and not args.host_profile:
        parser.error("--host_only needs --host_profile DIR")
    records = []
    for name in args.bench:
        records.append(run(name, args))
        print(report(records[-1]), flush=True)
        print()
    if args.json:
        write_records(Path(args.json), records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
