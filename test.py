"""Evaluate a saved run on every domain's test set.

    python test.py --run runs/prostate/<name>                       # last.pt, both students
    python test.py --run DIR --checkpoint best --model foundation
    python test.py --run DIR --teachers --save_predictions

Prints the per-domain table (Dice per region, mean Dice, Jaccard, HD95, ASD; mean over domains)
and writes DIR/test_<checkpoint>.json and .csv. The models are rebuilt from the config stored in
the checkpoint; a ViT foundation model needs its base weights file at the recorded path (or give
--foundation_checkpoint).
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
    run_sizes,
    seed_everything,
    select_device,
)
from utils.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_states,
    resolve_checkpoint,
)
from utils.config import config_from_dict
from utils.evaluation import evaluate, format_table, results_to_csv, to_json_ready

logger = logging.getLogger("test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    parser.add_argument("--checkpoint", default="last", help="last | best | path to a .pt file")
    parser.add_argument("--model", default="both", choices=["both", "unet", "foundation"])
    parser.add_argument("--teachers", action="store_true", help="also evaluate the EMA teachers")
    parser.add_argument("--root", help="dataset root (default: the one recorded in the run)")
    parser.add_argument("--foundation_checkpoint", help="base weights of a ViT foundation model")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch_size", type=int, help="test images per forward")
    parser.add_argument(
        "--save_predictions",
        action="store_true",
        help="write predicted label maps as PNGs under DIR/predictions_<checkpoint>/",
    )
    return parser.parse_args(argv)


def save_prediction_pngs(out_dir: Path, num_classes: int):
    """An ``on_batch`` callback writing each predicted label map as an 8-bit PNG (class * step)."""
    from PIL import Image

    step = 255 // max(num_classes, 1)

    def on_batch(model: str, domain: str, payload: dict) -> None:
        folder = out_dir / model / domain
        folder.mkdir(parents=True, exist_ok=True)
        for name, pred in zip(payload["names"], payload["pred"].cpu()):
            filename = name.replace("/", "_") + ".png"
            Image.fromarray((pred.byte() * step).numpy()).save(folder / filename)

    return on_batch


def run(args: argparse.Namespace) -> dict:
    run_dir = Path(args.run)
    path = resolve_checkpoint(run_dir, args.checkpoint)
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
            progress=True,
        ),
        spec,
        patch_size=sizes.patch,
        device=device,
        batch_size=args.batch_size or config.eval.batch_size,
        penalty=config.eval.empty_distance_penalty,
        on_batch=on_batch,
        progress=True,
    )
    print(f"{path} (step {state['step']}):\n{format_table(results, spec)}")
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
    except (CheckpointError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
