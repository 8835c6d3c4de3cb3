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

Printed: median ms per iteration after warm-up (and the 10th/90th percentiles), images per
second, peak GPU memory, the FLOPs of one iteration (counted by ``torch.utils.flop_counter``) with
the achieved TFLOP/s and an MFU estimate, the share of an iteration spent producing the augmented
batch, and the time of one evaluation pass over a prostate-sized test set (~300 slices).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.specs import DatasetSpec, get_spec  # noqa: E402
from utils.config import Config, load_config  # noqa: E402

# bench name -> (config file, overrides, train images per domain, test images per domain)
BENCHES = {
    "prostate": ("configs/prostate.yaml", [], 40, 50),
    "busi": ("configs/busi.yaml", ["model.foundation=litemedsam"], 40, 50),
    "tiny": (
        "configs/demo.yaml",
        ["model.foundation=tiny", "model.image_size=64", "model.unet_width=8",
         "data.patch_size=64", "data.labeled_bs=2", "data.unlabeled_bs=2"],
        8, 4,
    ),
}  # fmt: skip
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
    ]
    config = load_config(path, overrides)
    if config.model.foundation == "litemedsam" or config.model.foundation == "tiny":
        return config
    checkpoint = Path("checkpoints/medsam_vit_b.pth")
    config.model.foundation = "medsam_vit_b" if checkpoint.is_file() else "vit_b_random"
    config.model.checkpoint = str(checkpoint) if checkpoint.is_file() else None
    return config


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(trainer, count: int) -> list[float]:
    """Wall-clock seconds of ``count`` synchronised iterations."""
    times = []
    for _ in range(count):
        synchronize(trainer.device)
        start = time.perf_counter()
        trainer.train_step()
        trainer.step += 1
        synchronize(trainer.device)
        times.append(time.perf_counter() - start)
    return times


def time_batches(trainer, count: int) -> float:
    """Median seconds to draw, gather, augment and resize one labeled + unlabeled batch."""
    times = []
    for _ in range(count):
        synchronize(trainer.device)
        start = time.perf_counter()
        trainer._next_batches()
        synchronize(trainer.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(trainer) -> float:
    """FLOPs of one full iteration (forwards and backward), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step()
    trainer.step += 1
    return float(counter.get_total_flops())


def sync_check(trainer, count: int) -> str:
    """Run ``count`` non-logging iterations with CUDA's sync debug mode set to raise."""
    if trainer.device.type != "cuda":
        return "skipped (no CUDA)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(count):
            trainer.train_step()
            trainer.step += 1
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


def report(
    name: str,
    trainer,
    times: list[float],
    batch_seconds: float,
    flops: float,
    eval_seconds: float,
    sync: str,
    args: argparse.Namespace,
) -> str:
    device = trainer.device
    median = statistics.median(times)
    q = statistics.quantiles(times, n=10) if len(times) >= 10 else [min(times)] * 9 + [max(times)]
    images = trainer.config.data.labeled_bs + trainer.config.data.unlabeled_bs
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    memory = (
        f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        if device.type == "cuda"
        else "-"
    )
    achieved = flops / median / 1e12
    peak = peak_tflops(device, args.peak_tflops)
    mfu = f"{100 * achieved / peak:.1f} % of {peak:.0f}" if peak else "- (peak unknown)"
    sizes = trainer.sizes
    n_test = sum(len(d) for d in trainer.data.test.values())
    rows = [
        (
            "bench",
            f"{name}: {trainer.config.model.foundation} {sizes.foundation}px + U-Net "
            f"{sizes.patch}px (width {trainer.config.model.unet_width}), batch "
            f"{trainer.config.data.labeled_bs}+{trainer.config.data.unlabeled_bs}",
        ),
        (
            "device",
            f"{card}, torch {torch.__version__}, compile={args.compile}, "
            f"deterministic={args.deterministic}",
        ),
        (
            "ms / iteration",
            f"{1000 * median:.1f} median (p10 {1000 * q[0]:.1f}, p90 {1000 * q[-1]:.1f}) "
            f"over {len(times)} after {args.warmup} warm-up",
        ),
        ("images / s", f"{images / median:.1f}"),
        ("peak GPU memory", memory),
        ("FLOPs / iteration", f"{flops / 1e9:.1f} GFLOP -> {achieved:.2f} TFLOP/s, MFU {mfu}"),
        (
            "batch preparation",
            f"{1000 * batch_seconds:.1f} ms ({100 * batch_seconds / median:.0f} % "
            "of an iteration; data already on the device)",
        ),
        (
            "evaluation",
            f"{eval_seconds:.2f} s for {n_test} test slices, {len(trainer.data.test)} "
            "domains, both students, all metrics",
        ),
        ("sync check", sync),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(name: str, args: argparse.Namespace) -> str:
    from utils.trainer import Trainer

    spec = get_spec(load_config(BENCHES[name][0]).data.dataset)
    _, _, train, test = BENCHES[name]
    with tempfile.TemporaryDirectory() as tmp:
        size = max(spec.patch_size, 256) if name != "tiny" else 64
        root = write_fake_dataset(spec, Path(tmp) / "data", train, test, size)
        config = bench_config(name, root, args)
        trainer = Trainer(config, Path(tmp) / "run", progress=False)
        trainer._train_modes()
        time_iterations(trainer, args.warmup)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        times = time_iterations(trainer, args.iterations)
        batch_seconds = time_batches(trainer, min(args.iterations, 20))
        flops = count_flops(trainer)
        sync = sync_check(trainer, 5) if args.sync_check else "not run (--sync_check)"
        synchronize(trainer.device)
        start = time.perf_counter()
        trainer.evaluate()
        synchronize(trainer.device)
        eval_seconds = time.perf_counter() - start
        return report(name, trainer, times, batch_seconds, flops, eval_seconds, sync, args)


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
        "--sync_check",
        action="store_true",
        help="run 5 iterations with torch.cuda.set_sync_debug_mode('error')",
    )
    parser.add_argument("--peak_tflops", type=float, help="the card's dense bf16 peak, for MFU")
    args = parser.parse_args(argv)
    for name in args.bench:
        print(run(name, args), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
