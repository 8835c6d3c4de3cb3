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
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.specs import get_spec  # noqa: E402
from engine.config import load_config  # noqa: E402
from scripts.bench_data import BENCHES, bench_config, write_fake_dataset  # noqa: E402
from scripts.bench_report import report, write_records  # noqa: E402
from scripts.bench_timing import measure  # noqa: E402


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
    """One bench: its data in a temporary folder, a trainer on them, and that trainer's record."""
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


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What each bench runs: which benches, how many iterations, device and config."""
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


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The optional checks and what is written: sync check, profiles, JSON, host profile."""
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_run_arguments(parser)
    _add_output_arguments(parser)
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
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every given bench, print its report, and append the records to ``--json``."""
    args = parse_args(argv)
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
