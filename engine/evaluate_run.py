"""Evaluating a saved run (what ``test.py`` calls): rebuild its models from the checkpoint's
config, load the trained weights, evaluate every tested domain, and write the tables as
``test_<checkpoint>.json`` / ``.csv`` (and, on request, one PNG per prediction) into the run
folder. test.py's docstring describes the outputs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from dataloaders.specs import DatasetSpec, get_spec
from dataloaders.splits import build_test_sets
from engine.build import (
    Sizes,
    build_models,
    build_predictors,
    configure_backend,
    evaluated_domains,
    run_sizes,
    seed_everything,
    select_device,
)
from engine.checkpoint import (
    CheckpointError,
    ensure_writable,
    load_checkpoint,
    load_model_states,
    resolve_checkpoint,
)
from engine.config import Config, config_from_dict
from evaluation.evaluate import evaluate
from evaluation.report import format_class_table, format_table, results_to_csv, to_json_ready
from method.batches import Models

logger = logging.getLogger("test")


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


@dataclass
class LoadedRun:
    """A saved run rebuilt for evaluation: its folder, checkpoint, config and models."""

    run_dir: Path
    path: Path  # the checkpoint file
    step: int
    config: Config
    spec: DatasetSpec
    device: torch.device
    models: Models  # in eval mode, trained weights loaded
    sizes: Sizes


def load_run(
    run: str,
    checkpoint: str | None = None,
    *,
    root: str | None = None,
    foundation_checkpoint: str | None = None,
    device: str = "auto",
) -> LoadedRun:
    """Rebuild the models of ``run`` (a run folder, or one of its checkpoints) from the config
    stored in the checkpoint, then load the trained weights; ``root`` and
    ``foundation_checkpoint`` replace the recorded dataset root and base weights file."""
    run_dir, path = resolve_run(run, checkpoint)
    ensure_writable(run_dir, "test.py writes test_<checkpoint>.json and .csv there")
    state = load_checkpoint(path)
    config = config_from_dict(state["config"])
    config.data.root = root or config.data.root
    config.model.checkpoint = foundation_checkpoint or config.model.checkpoint
    spec = get_spec(config.data.dataset)
    target = select_device(device)
    configure_backend(target, config.train.deterministic)  # the same TF32 settings as training
    # Same seed and build order as training: a randomly initialised frozen encoder (the "tiny"
    # test model) is then identical; pretrained models do not depend on it.
    seed_everything(config.train.seed)
    models = build_models(config, spec, target)
    load_model_states(models, state["models"])
    log_loaded(models, state, path)
    for model in vars(models).values():
        if model is not None:
            model.eval()
    sizes = run_sizes(config, spec, models)
    return LoadedRun(run_dir, path, state["step"], config, spec, target, models, sizes)


def evaluate_run(
    loaded: LoadedRun,
    *,
    model: str = "both",
    teachers: bool = False,
    batch_size: int | None = None,
    save_predictions: bool = False,
    progress: bool = True,
) -> dict:
    """Evaluate ``model`` (both | unet | foundation, and the teachers on request) of a loaded
    run on every evaluated domain's test set; print the tables and write
    ``test_<checkpoint>.json`` and ``.csv`` (and the PNGs) into the run folder."""
    run, config, spec = loaded, loaded.config, loaded.spec
    names = ("unet", "foundation") if model == "both" else (model,)
    predictors = build_predictors(run.models, run.sizes, names, teachers=teachers)
    if not predictors:
        raise CheckpointError(
            f"{run.path} holds no {model} model (method.students={config.method.students})"
        )
    tag = run.path.stem
    on_batch = None
    if save_predictions:
        on_batch = save_prediction_pngs(run.run_dir / f"predictions_{tag}", spec.num_classes)
    test_sets = build_test_sets(
        spec, config.data.root, canvas_size=run.sizes.canvas, patch_size=run.sizes.patch,
        progress=progress, domains=evaluated_domains(config, spec),
    )  # fmt: skip
    # fp32, no autocast, as the reference's test() and the training-time evaluations.
    results = evaluate(
        predictors, test_sets, spec, patch_size=run.sizes.patch, device=run.device,
        batch_size=batch_size or config.eval.batch_size,
        penalty=config.eval.empty_distance_penalty, on_batch=on_batch, progress=progress,
    )  # fmt: skip
    print(f"{run.path} (step {run.step}):\n{format_table(results, spec)}")
    if spec.eval_unit == "volume":  # per class, as the SSL4MIS tables
        print(f"\n{format_class_table(results)}")
    payload = {"checkpoint": str(run.path), "step": run.step, "results": to_json_ready(results)}
    (run.run_dir / f"test_{tag}.json").write_text(json.dumps(payload, indent=1))
    results_to_csv(results, run.run_dir / f"test_{tag}.csv")
    return results
