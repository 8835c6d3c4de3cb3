"""Evaluations during training: the students on the validation split (or test, without one),
``eval/<step>.json``, TensorBoard scalars and a prediction grid, and the metric behind
``best.pt``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from dataloaders.specs import DatasetSpec
from engine.build import Sizes, build_predictors
from engine.config import EvalConfig
from evaluation.evaluate import evaluate
from evaluation.report import to_json_ready
from method.batches import Models
from utils.logging import prediction_grid


def evaluate_students(
    models: Models,
    sizes: Sizes,
    cfg: EvalConfig,
    eval_sets: dict[str, Any],
    spec: DatasetSpec,
    device: torch.device,
    examples: dict[str, list] | None = None,
) -> dict[str, Any]:
    """The configured students (and teachers on request) on every domain of ``eval_sets``, in
    fp32 without autocast as the reference's test() (bf16 would flip near-tie pixels). The
    caller sets eval modes. ``examples`` collects the first batch of each model and domain."""
    predictors = build_predictors(models, sizes, cfg.models, teachers=cfg.teachers)

    def keep_examples(model: str, domain: str, payload: dict) -> None:
        if examples is not None and len(examples.setdefault(f"{model}/{domain}", [])) == 0:
            examples[f"{model}/{domain}"].append(payload)

    return evaluate(
        predictors,
        eval_sets,
        spec,
        patch_size=sizes.patch,
        device=device,
        batch_size=cfg.batch_size,
        penalty=cfg.empty_distance_penalty,
        on_batch=keep_examples,
        progress=False,
    )


def write_evaluation(run_dir: Path, step: int, split: str, results: dict[str, Any]) -> None:
    """``run_dir/eval/<step>.json``: the step, the split evaluated and the results."""
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    payload = {"step": step, "split": split, "results": to_json_ready(results)}
    (eval_dir / f"{step}.json").write_text(json.dumps(payload, indent=1))


def selection_metric(results: dict[str, Any], select_model: str) -> float:
    """Mean Dice of ``eval.select_model`` (else of the first model evaluated); -inf if NaN."""
    name = select_model if select_model in results else next(iter(results))
    value = results[name]["mean"]["mean"]["dice"]
    return -math.inf if value is None or math.isnan(value) else value


def log_evaluation(
    writer: SummaryWriter,
    results: dict[str, Any],
    examples: dict[str, list],
    spec: DatasetSpec,
    tag: str,
    step: int,
) -> None:
    """Dice per model, domain and region, the mean metrics, and the prediction grid."""
    for model, result in results.items():
        for domain, values in result["domains"].items():
            for region, metrics in values["regions"].items():
                writer.add_scalar(f"{tag}/{model}/{domain}/{region}/dice", metrics["dice"], step)
        for metric, value in result["mean"]["mean"].items():
            writer.add_scalar(f"{tag}/{model}/mean/{metric}", value, step)
    grid = examples_grid(examples, spec)
    if grid is not None:
        writer.add_image(f"{tag}/predictions", grid, step)


def examples_grid(examples: dict[str, list], spec: DatasetSpec) -> torch.Tensor | None:
    """Two images per domain, one row each: image, ground truth, then each model's prediction
    (:func:`utils.logging.prediction_grid`); (3, H, W) float in [0, 1], or None without
    examples."""
    by_domain: dict[str, dict[str, dict]] = {}
    for key, payloads in examples.items():
        model, domain = key.split("/", 1)
        by_domain.setdefault(domain, {})[model] = payloads[0]
    rows = []
    for per_model in by_domain.values():
        first = next(iter(per_model.values()))
        n = min(2, len(first["target"]))
        # To the labels' size: the patch, or a volume's native in-plane size (H, W).
        size = tuple(first["target"].shape[-2:])
        images = F.interpolate(
            first["images"][:n].float().cpu(), size=size, mode="bilinear", antialias=True
        )
        preds = [p["pred"][:n].cpu() for p in per_model.values()]
        rows.append(prediction_grid(images, first["target"][:n].cpu(), preds, spec.num_classes + 1))
    return torch.cat(rows, dim=1) if rows else None
