"""Evaluate a saved run on every domain's test set.

    python test.py --run runs/prostate/<name>                       # last.pt, both students
    python test.py --run DIR --checkpoint best --model foundation
    python test.py --run DIR/checkpoints/best.pt                    # the same as --checkpoint best
    python test.py --run DIR --teachers --save_predictions --no_progress

DIR is a run folder written by train.py (config.yaml, train.log, checkpoints/last.pt and best.pt,
eval/, tb/). Prints the per-domain table (Dice per region, mean Dice, Jaccard, HD95, ASD; mean
over domains) and writes DIR/test_<checkpoint>.json and .csv, <checkpoint> being the file's stem
(last, best, ...). The models are rebuilt from the config stored in the checkpoint, then the
trained weights are loaded from it; a ViT foundation model needs its base weights file at the
recorded path (or give --foundation_checkpoint).

--save_predictions writes one PNG per test image and evaluated model:
DIR/predictions_<checkpoint>/<model>/<domain>/<image stem>.png, e.g.
predictions_best/unet/benign/benign (5).png for the test image benign/benign (5).png. Each PNG is
the predicted label map at the evaluation resolution, patch_size x patch_size (data.patch_size,
else the dataset's default; the resolution of the test masks and of the metrics), not the
image's native size: non-square images are stretched onto the square, as in training. Pixels are
8-bit gray, value = class index x (255 // C), C = number of foreground classes: 0/255 for one
class, 0/127/254 for two, 0/85/170/255 for three; the class index is value // (255 // C).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dataloaders.datasets import DataError
from dataloaders.specs import get_spec
from dataloaders.splits import build_test_sets
from utils.build import (
    build_models,
    build_predictors,
    configure_backend,
    evaluated_domains,
    run_sizes,
    seed_everything,
    select_device,
)
from utils.checkpoint import (
    CheckpointError,
    ensure_writable,
    load_checkpoint,
    load_model_states,
    resolve_checkpoint,
)
from utils.config import ConfigError, config_from_dict
from utils.evaluation import (
    evaluate,
    format_class_table,
    format_table,
    results_to_csv,
    to_json_ready,
)

logger = logging.getLogger("test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        required=True,
        help="run folder written by train.py (or one of its checkpoints/*.pt files)",
    )
    parser.add_argument(
        "--checkpoint", help="last (default) | best | a path to a .pt file (outputs go to --run)"
    )
    parser.add_argument("--model", default="both", choices=["both", "unet", "foundation"])
    parser.add_argument("--teachers", action="store_true", help="also evaluate the EMA teachers")
    parser.add_argument("--root", help="dataset root (default: the one recorded in the run)")
    parser.add_argument("--foundation_checkpoint", help="base weights of a ViT foundation model")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch_size", type=int, help="test images per forward")
    parser.add_argument(
        "--save_predictions",
        action="store_true",
        help="write each predicted label map as DIR/predictions_<checkpoint>/<model>/<domain>/"
        "<image stem>.png: patch_size x patch_size (the evaluation resolution, not the native "
        "size), 8-bit gray, value = class index x (255 // C) for C foreground classes",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def resolve_run(run: str, checkpoint: str | None) -> tuple[Path, Path]:
    """The run folder (where outputs go) and the checkpoint file of ``--run`` / ``--checkpoint``.

    ``--run DIR/checkpoints/X.pt`` is accepted as ``--run DIR --checkpoint DIR/checkpoints/X.pt``.

    Raises:
        CheckpointError: one line saying what is wrong and what to give instead.
    """
    given = Path(run)
    if given.suffix == ".pt" or given.is_file():
        usage = "use --run DIR --checkpoint last|best|PATH"
        if checkpoint is not None:
            raise CheckpointError(f"--run {run} is a checkpoint file, not a run folder; {usage}")
        if not given.is_file():
            raise CheckpointError(f"checkpoint {given} does not exist; {usage}")
        if given.parent.name != "checkpoints":
            raise CheckpointError(
                f"--run {run} is a file outside a run's checkpoints/ folder; {usage}"
            )
        return given.parent.parent, given
    return given, resolve_checkpoint(given, checkpoint or "last")


def prediction_filename(name: str, domain: str) -> str:
    """``benign/benign (5)`` in domain ``benign`` -> ``benign (5).png``: the sample name without
    its domain folder (the PNG already lies in one); any other ``/`` becomes ``_``."""
    stem = name.removeprefix(f"{domain}/")
    return stem.replace("/", "_") + ".png"


def save_prediction_pngs(out_dir: Path, num_classes: int):
    """An ``on_batch`` callback writing each predicted label map (p x p class indices) as an
    8-bit gray PNG ``out_dir/<model>/<domain>/<image stem>.png`` of value class x (255 // C)."""
    from PIL import Image

    step = 255 // max(num_classes, 1)

    def on_batch(model: str, domain: str, payload: dict) -> None:
        folder = out_dir / model / domain
        folder.mkdir(parents=True, exist_ok=True)
        for name, pred in zip(payload["names"], payload["pred"].cpu()):
            image = Image.fromarray((pred.byte() * step).numpy())
            image.save(folder / prediction_filename(name, domain))

    return on_batch


def log_loaded(models, state: dict, path: Path) -> None:
    """Say which trained weights came from the checkpoint. Building the models may have logged
    "<foundation>: randomly initialised (no checkpoint)" (networks.build_foundation): that is
    the frozen base encoder before this load, not the evaluated model."""
    loaded = [
        name
        for name, model in vars(models).items()
        if model is not None and state["models"].get(name) is not None
    ]
    note = ""
    if models.foundation is not None and "foundation" in loaded:
        note = "; foundation models: their trained LoRA, decoder and prompt over the frozen encoder"
        if models.foundation.load_report is None:
            note += ", which is random by design here and rebuilt with the training seed"
    logger.info(
        "loaded trained weights of %s from %s (step %s)%s",
        ", ".join(loaded) or "no model",
        path,
        state["step"],
        note,
    )


def run(args: argparse.Namespace) -> dict:
    run_dir, path = resolve_run(args.run, args.checkpoint)
    ensure_writable(run_dir, "test.py writes test_<checkpoint>.json and .csv there")
    state = load_checkpoint(path)
    config = config_from_dict(state["config"])
    config.data.root = args.root or config.data.root
    config.model.checkpoint = args.foundation_checkpoint or config.model.checkpoint
    spec = get_spec(config.data.dataset)
    device = select_device(args.device)
    configure_backend(device, config.train.deterministic)  # the same TF32 settings as training
    # Same seed and build order as training: a randomly initialised frozen encoder (the "tiny"
    # test model) is then identical; pretrained models do not depend on it.
    seed_everything(config.train.seed)
    models = build_models(config, spec, device)
    load_model_states(models, state["models"])
    log_loaded(models, state, path)
    for model in vars(models).values():
        if model is not None:
            model.eval()
    sizes = run_sizes(config, spec, models)
    names = ("unet", "foundation") if args.model == "both" else (args.model,)
    predictors = build_predictors(models, sizes, names, teachers=args.teachers)
    if not predictors:
        raise CheckpointError(
            f"{path} holds no {args.model} model (method.students={config.method.students})"
        )
    tag = path.stem
    on_batch = (
        save_prediction_pngs(run_dir / f"predictions_{tag}", spec.num_classes)
        if args.save_predictions
        else None
    )
    # fp32, no autocast, as the reference's test() and the training-time evaluations.
    results = evaluate(
        predictors,
        build_test_sets(
            spec,
            config.data.root,
            canvas_size=sizes.canvas,
            patch_size=sizes.patch,
            progress=not args.no_progress,
            domains=evaluated_domains(config, spec),
        ),
        spec,
        patch_size=sizes.patch,
        device=device,
        batch_size=args.batch_size or config.eval.batch_size,
        penalty=config.eval.empty_distance_penalty,
        on_batch=on_batch,
        progress=not args.no_progress,
    )
    print(f"{path} (step {state['step']}):\n{format_table(results, spec)}")
    if spec.eval_unit == "volume":  # per class, as the SSL4MIS tables
        print(f"\n{format_class_table(results)}")
    (run_dir / f"test_{tag}.json").write_text(
        json.dumps(
            {"checkpoint": str(path), "step": state["step"], "results": to_json_ready(results)},
            indent=1,
        )
    )
    results_to_csv(results, run_dir / f"test_{tag}.csv")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args)
    except (CheckpointError, ConfigError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
