"""The training loop around :func:`utils.synfoc.synfoc_step`.

Per iteration: draw labeled and unlabeled indices on the device, gather the cached uint8
canvases, augment them on the device (weak for both, strong on top of the weak unlabeled view),
resize to each model's input, run one SynFoC step (docs/METHOD.md, "One iteration") under bf16
autocast (CUDA), one backward, both optimizers, then the EMA teachers. Scalars stay on the device
and are read back once every ``train.log_interval`` steps. Every ``train.eval_interval`` steps the
students are evaluated on every domain's test set, ``eval/<step>.json`` is written and
``last.pt`` / ``best.pt`` are saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dataloaders.sampler import RandomBatches
from dataloaders.specs import get_spec
from dataloaders.transforms import (
    AugmentParams,
    resize_images,
    resize_masks,
    strong_augment,
    weak_augment,
)
from utils.build import (
    build_data,
    build_models,
    build_predictors,
    configure_backend,
    run_sizes,
    seed_everything,
    select_device,
)
from utils.checkpoint import load_checkpoint, load_model_states, save_checkpoint
from utils.config import Config, ConfigError, TrainConfig, config_to_dict
from utils.ema import EmaTensors, ema_lerp, ema_tensors
from utils.evaluation import evaluate, format_table, to_json_ready
from utils.logging import prediction_grid
from utils.metrics import region_masks
from utils.schedules import consistency_ramp, foundation_lr, ramp_phase
from utils.synfoc import (
    LabeledBatch,
    Models,
    StepOutput,
    UnlabeledBatch,
    Views,
    draw_step_boxes,
    synfoc_step,
    validate_method,
)

logger = logging.getLogger(__name__)

# Meter entry of the ensemble's per-domain pooled-Dice sums; _log turns it into Dice scalars.
DOMAIN_DICE_TERMS = "diag/pseudo_dice_terms"

# torch.compile modes accepted as train.compile_mode, and what train.compile_scope may capture.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("networks", "step")
# The phases of one iteration (:meth:`Trainer.iterate`), in order, as Trainer.phase names them.
PHASES = ("batches", "forward", "backward", "optimizers + EMA", "diagnostics")


def untimed_phase(name: str) -> contextlib.AbstractContextManager:
    """The default :attr:`Trainer.phase`: runs a phase as it is."""
    return contextlib.nullcontext()


class ScalarMeter:
    """Running sums of device tensors (0-dim scalars, or small tensors of a fixed shape per name),
    kept as one flat device vector; one host transfer per :meth:`read`.

    It also counts, on the device, the steps after which every running sum was still finite. A
    nan or inf makes its sum non-finite for good (they never cancel back into a finite number),
    so that count says at which step of the interval the first non-finite value came, without a
    read-back per step (:meth:`nonfinite`).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._layout: list[tuple[str, torch.Size]] = []
        self._sum: torch.Tensor | None = None
        self._finite_steps: torch.Tensor | None = None
        self.steps = 0  # steps added since the last read

    def add(self, scalars: dict[str, torch.Tensor]) -> None:
        """Add one step's values (the same names and shapes every step). The sums never alias
        them: a compiled step with CUDA graphs writes the next step's outputs into the same
        memory, and ``torch.cat`` copies."""
        layout = [(name, value.shape) for name, value in scalars.items()]
        flat = torch.cat([v.detach().float().reshape(-1) for v in scalars.values()])
        if self._sum is None:
            self._layout, self._sum = layout, flat
        elif layout != self._layout:
            raise ValueError(f"ScalarMeter.add: {layout}; this interval added {self._layout}")
        else:
            self._sum = self._sum + flat
        finite = torch.isfinite(self._sum).all().long()
        self._finite_steps = finite if self._finite_steps is None else self._finite_steps + finite
        self.steps += 1

    def read(self) -> dict[str, float | list[float]]:
        """Means since the last read (the only synchronising call), then reset: a float per
        0-dim entry, a flat list (row-major) per larger one."""
        if self._sum is None:
            return {}
        flat = (self._sum / self.steps).tolist()
        means, start = {}, 0
        for name, shape in self._layout:
            size = shape.numel()
            means[name] = flat[start] if len(shape) == 0 else flat[start : start + size]
            start += size
        self._reset()
        return means

    def nonfinite(self) -> tuple[dict[str, float], int]:
        """The entries whose running sum is not finite (name -> its first non-finite value), and
        how many of the steps since the last read came before the first non-finite one. One host
        transfer; nothing is reset. ``({}, steps)`` while everything is finite."""
        if self._sum is None:
            return {}, 0
        *sums, finite_steps = torch.cat([self._sum, self._finite_steps[None].float()]).tolist()
        bad, start = {}, 0
        for name, shape in self._layout:
            values = [v for v in sums[start : start + shape.numel()] if not math.isfinite(v)]
            start += shape.numel()
            if values:
                bad[name] = values[0]
        return bad, int(finite_steps)


class DivergedError(RuntimeError):
    """A loss term or a weight is not finite: the run stopped before saving anything from it."""


class UnlabeledTruth(NamedTuple):
    """Ground truth of an unlabeled batch, for the loop's diagnostics only: the step never sees
    it."""

    masks: torch.Tensor  # (B, P, P) class indices at the patch size
    domains: torch.Tensor  # (B,) int64, 0-based index into spec.domains


def build_optimizers(models: Models, config: Config) -> dict[str, torch.optim.Optimizer]:
    """SGD for the U-Net and AdamW for the foundation model's trainable tensors (paper 4.1)."""
    optim, optimizers = config.optim, {}
    if models.unet is not None:
        optimizers["unet"] = torch.optim.SGD(
            models.unet.parameters(),
            lr=optim.unet_lr,
            momentum=optim.unet_momentum,
            weight_decay=optim.unet_weight_decay,
        )
    if models.foundation is not None:
        params = [p for p in models.foundation.parameters() if p.requires_grad]
        optimizers["foundation"] = torch.optim.AdamW(
            params,
            lr=optim.foundation_lr,
            betas=optim.foundation_betas,
            weight_decay=optim.foundation_weight_decay,
            fused=params[0].is_cuda,
        )
    return optimizers


def pooled_region_dice(
    pred: torch.Tensor, target: torch.Tensor, regions: list[tuple[int, ...]]
) -> torch.Tensor:
    """Dice per region of label maps (B, H, W), pooled over the batch -> (R,); 1 if both empty.

    Not the per-sample, smoothed Dice of SMC (``utils.smc.region_dice``): a diagnostic.
    """
    one_group = torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device)
    overlap, sizes, _ = pooled_dice_terms(pred, target, regions, one_group, 1)[:, 0]
    return dice_from_terms(overlap, sizes)


def dice_from_terms(overlap: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Pooled Dice from the sums of :func:`pooled_dice_terms` (2 |A ∩ B|, |A| + |B|, any equal
    shapes, means or sums alike); 1 where both maps are empty."""
    return torch.where(sizes > 0, overlap / sizes.clamp_min(1e-12), torch.ones_like(sizes))


def pooled_dice_terms(
    pred: torch.Tensor,
    target: torch.Tensor,
    regions: list[tuple[int, ...]],
    groups: torch.Tensor,
    num_groups: int,
) -> torch.Tensor:
    """The sums behind a pooled Dice, per group of images and region: (3, G, R) float.

    ``[0]`` = 2 |pred ∩ target| and ``[1]`` = |pred| + |target| in pixels, ``[2]`` = the number
    of images, each summed over the images of the group (``groups``: (B,) int64 in 0..G-1;
    label maps (B, H, W)). Summed over many batches, ``[0] / [1]`` is the Dice pooled over every
    image of a group seen, however the groups were spread over the batches.
    """
    a, b = region_masks(pred, regions), region_masks(target, regions)  # (B, R, H, W)
    inter = (a & b).sum((2, 3)).float()
    total = (a.sum((2, 3)) + b.sum((2, 3))).float()
    # (G, B) membership; not F.one_hot, whose range check reads values back on the CPU.
    members = (torch.arange(num_groups, device=groups.device)[:, None] == groups).float()
    sizes = members @ total  # (G, R)
    images = members.sum(1, keepdim=True).expand_as(sizes)
    return torch.stack([2 * members @ inter, sizes, images])


class Trainer:
    """Builds a run from its config and trains it; see the module docstring.

    Args:
        config: the resolved experiment config.
        run_dir: output folder (config.yaml, train.log, tb/, checkpoints/, eval/).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        progress: show tqdm bars.
    """

    def __init__(
        self, config: Config, run_dir: Path, *, resume: bool = False, progress: bool = True
    ):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.spec = get_spec(config.data.dataset)
        validate_method(config.method)
        for key, value, choices in (
            ("compile_mode", config.train.compile_mode, COMPILE_MODES),
            ("compile_scope", config.train.compile_scope, COMPILE_SCOPES),
        ):
            if value not in choices:
                raise ConfigError(
                    f"train.{key}: unknown {value!r}; expected one of {list(choices)}"
                )
        self.device = select_device(config.train.device)
        configure_backend(self.device, config.train.deterministic)
        seed_everything(config.train.seed)
        self.models = build_models(config, self.spec, self.device)
        self.step_models, self.step_fn = self._compiled_step(config.train, self.models)
        self.sizes = run_sizes(config, self.spec, self.models)
        self.data = build_data(config, self.spec, self.sizes, progress=progress)
        self.labeled = self.data.labeled.samples
        self.unlabeled = self.data.unlabeled.samples
        # Training-time evaluations (eval/, best.pt) use the held-out validation split if any.
        self.eval_split = "val" if self.data.val else "test"
        self.eval_sets = self.data.val or self.data.test
        self._move_train_data()
        self.max_iterations = config.train.max_iterations or self.spec.max_iterations
        # Schedules span the paper's length (or an explicit horizon), not this run's length.
        self.ramp_iterations = config.method.ramp_iterations or self.spec.max_iterations
        self.lr_iterations = config.optim.foundation_schedule_iterations or self.spec.max_iterations
        self.regions = [classes for _, classes in self.spec.eval_regions]
        self.augment = AugmentParams.from_spec(self.spec)
        self.generator = torch.Generator(device=self.device).manual_seed(config.train.seed)
        batch_size = config.data.labeled_bs
        self.labeled_batches = RandomBatches(
            len(self.labeled.names), batch_size, self.generator, self.device
        )
        self.unlabeled_batches = RandomBatches(
            len(self.unlabeled.names), batch_size, self.generator, self.device
        )
        self.optimizers = build_optimizers(self.models, config)
        self.ema_pairs = self._match_teachers()
        self.meter = ScalarMeter()
        # Wraps each phase of an iteration (PHASES); scripts/bench.py times or profiles them.
        self.phase: Callable[[str], contextlib.AbstractContextManager] = untimed_phase
        self.step, self.best = 0, {"metric": -math.inf, "step": None}
        self.saved_step: int | None = None  # step of the newest checkpoint written or resumed
        if resume:
            self._load(self.run_dir / "checkpoints" / "last.pt")
        # Events up to the checkpoint's step (its logs and evaluation) stay; later ones are redone.
        purge_step = self.step + 1 if resume else None
        self.writer = SummaryWriter(self.run_dir / "tb", purge_step=purge_step)

    # ----------------------------------------------------------------------------- set-up helpers
    def _move_train_data(self) -> None:
        for samples in (self.labeled, self.unlabeled):
            samples.images = samples.images.to(self.device)
            samples.masks = samples.masks.to(self.device)
            samples.domains = samples.domains.to(self.device)

    @classmethod
    def _compiled_step(cls, train: TrainConfig, models: Models) -> tuple[Models, Callable]:
        """The networks and the step function that :meth:`forward` calls: the originals, each
        network compiled (``train.compile_scope=networks``), or the whole step compiled with the
        original networks inside it (``step``)."""
        if not train.compile:
            return models, synfoc_step
        if train.compile_scope == "networks":
            return cls._compiled(models, train.compile_mode), synfoc_step
        return models, torch.compile(synfoc_step, dynamic=False, mode=train.compile_mode)

    @staticmethod
    def _compiled(models: Models, mode: str) -> Models:
        """The same networks behind torch.compile (shared weights; checkpoints use originals).

        Static shapes: the teacher (batch B) and student (2B) forwards of one class share a
        compile cache, and automatic dynamic shapes would make the batch symbolic after the
        second size; with ``dynamic=False`` each of the few sizes gets its own specialised graph.
        ``mode`` is ``train.compile_mode`` (``reduce-overhead`` replays CUDA graphs, which the
        step allows: it never synchronises with the host).
        """
        return Models(
            **{
                k: m if m is None else torch.compile(m, dynamic=False, mode=mode)
                for k, m in vars(models).items()
            }
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.config.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_modes(self) -> None:
        """Students train; teachers use batch statistics (reference) or their EMA'd running ones."""
        teacher_train = self.config.method.teacher_bn == "batch"
        for name in ("unet", "foundation"):
            for model, train in (
                (getattr(self.models, name), True),
                (getattr(self.models, name + "_teacher"), teacher_train),
            ):
                if model is not None:
                    model.train(train)

    def _eval_modes(self) -> None:
        for model in vars(self.models).values():
            if model is not None:
                model.eval()

    # ------------------------------------------------------------------------------- one iteration
    def _views(self, images: torch.Tensor) -> Views:
        foundation = resize_images(images, self.sizes.foundation) if self.sizes.foundation else None
        return Views(foundation=foundation, unet=resize_images(images, self.sizes.patch))

    def next_batches(self) -> tuple[LabeledBatch, UnlabeledBatch, UnlabeledTruth]:
        """Augmented labeled and unlabeled batches, and the unlabeled ground truth at the patch
        size with each image's domain (for diagnostics only: it never reaches the step)."""
        fill, g = self.spec.rotation_fill_class, self.generator
        li, ui = self.labeled_batches.next(), self.unlabeled_batches.next()
        lx, ly = weak_augment(
            self.labeled.images[li], self.labeled.masks[li], g, self.augment, fill_class=fill
        )
        ux, uy = weak_augment(
            self.unlabeled.images[ui], self.unlabeled.masks[ui], g, self.augment, fill_class=fill
        )
        strong = strong_augment(ux, g, self.augment)
        mask_foundation = resize_masks(ly, self.sizes.logits) if self.sizes.logits else None
        labeled = LabeledBatch(self._views(lx), mask_foundation, resize_masks(ly, self.sizes.patch))
        unlabeled = UnlabeledBatch(weak=self._views(ux), strong=self._views(strong))
        truth = UnlabeledTruth(resize_masks(uy, self.sizes.patch), self.unlabeled.domains[ui])
        return labeled, unlabeled, truth

    def _set_learning_rates(self) -> None:
        if "foundation" not in self.optimizers:
            return
        optim = self.config.optim
        lr = foundation_lr(
            self.step,
            optim.foundation_lr,
            self.lr_iterations,
            optim.foundation_warmup,
            optim.foundation_schedule,
        )
        for group in self.optimizers["foundation"].param_groups:
            group["lr"] = lr

    def iterate(self) -> StepOutput:
        """One iteration as the training loop runs it: :meth:`train_step`, the step counter, and
        the step's scalars with the pseudo-label diagnostics summed on the device (no read-back;
        :meth:`_log` reads the means every ``log_interval`` steps)."""
        out, truth = self.train_step()
        self.step += 1
        with self.phase("diagnostics"):
            self.meter.add({**out.scalars, **self._pseudo_label_dice(out, truth)})
        return out

    def train_step(self) -> tuple[StepOutput, UnlabeledTruth]:
        """One SynFoC iteration; returns the step output and the unlabeled ground truth.

        Each phase runs inside :attr:`phase` (a no-op unless ``scripts/bench.py`` times or
        profiles them).
        """
        with self.phase("batches"):
            labeled, unlabeled, truth = self.next_batches()
        with self.phase("forward"):
            out = self.forward(labeled, unlabeled)
        with self.phase("backward"):
            self.backward(out.loss)
        with self.phase("optimizers + EMA"):
            self.update()
        return out, truth

    def forward(self, labeled: LabeledBatch, unlabeled: UnlabeledBatch) -> StepOutput:
        """Learning rates for this step, the copy-paste draws, then the step (``synfoc_step``,
        compiled or not) under autocast."""
        method = self.config.method
        lam = consistency_ramp(
            self.step, self.ramp_iterations, method.ramp, method.consistency_weight,
            method.ramp_stairs,
        )  # fmt: skip
        self._set_learning_rates()
        progress = ramp_phase(self.step, self.ramp_iterations)  # the "linear" alpha strategy
        if self.config.train.compile:
            # A new step: CUDA graphs (compile_mode reduce-overhead) may now reuse the memory of
            # the previous step's outputs; without CUDA graphs this only marks the step.
            torch.compiler.cudagraph_mark_step_begin()
        if self.step_fn is not synfoc_step:
            # Inputs of the compiled step, not constants baked into (or recompiling) its graph.
            lam, progress = (torch.full((), v, device=self.device) for v in (lam, progress))
        box_draws = draw_step_boxes(
            method, unlabeled.weak.unet.shape[0], self.generator, self.device
        )
        with self._autocast():
            return self.step_fn(
                self.step_models,
                labeled,
                unlabeled,
                cfg=method,
                regions=self.regions,
                lam=lam,
                progress=progress,
                box_draws=box_draws,
            )

    def backward(self, loss: torch.Tensor) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def update(self) -> None:
        """Both optimizers, then the EMA teachers."""
        for optimizer in self.optimizers.values():
            optimizer.step()
        self._update_teachers()

    def _update_teachers(self) -> None:
        for tensors in self.ema_pairs.values():
            ema_lerp(tensors, self.step, self.config.optim.ema_decay)

    def _match_teachers(self) -> dict[str, EmaTensors]:
        """Each teacher's tensors matched to its student's, once (see :class:`EmaTensors`)."""
        buffers = self.config.method.teacher_bn == "running"
        pairs = {}
        for name in ("unet", "foundation"):
            teacher = getattr(self.models, name + "_teacher")
            if teacher is not None:
                student = getattr(self.models, name)
                pairs[name] = ema_tensors(teacher, student, include_buffers=buffers)
        return pairs

    # ------------------------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``max_iterations`` (from the resumed step), then return the last evaluation."""
        train = self.config.train
        results: dict[str, Any] = {}
        self._train_modes()
        bar = tqdm(
            total=self.max_iterations,
            initial=self.step,
            disable=not self.progress,
            desc="train",
            dynamic_ncols=True,
        )
        while self.step < self.max_iterations:
            out = self.iterate()
            last = self.step == self.max_iterations
            if self.step % train.log_interval == 0 or last:
                self._log(out, bar)
            if self.step % train.eval_interval == 0 or last:
                results = self.evaluate_and_save()
            elif self.step % train.checkpoint_interval == 0:
                self._save_checkpoints("last")
            bar.update(1)
        bar.close()
        if not results:  # resumed at the end: evaluate once more to report
            results = self.evaluate_and_save()
        logger.info("final evaluation at step %d:\n%s", self.step, format_table(results, self.spec))
        self.writer.close()
        return results

    # -------------------------------------------------------------------------------------- logging
    def _log(self, out: StepOutput, bar: tqdm) -> None:
        self._check_losses()
        scalars = self.meter.read()
        if DOMAIN_DICE_TERMS in scalars:
            scalars.update(self._domain_dice(scalars.pop(DOMAIN_DICE_TERMS)))
        for name, optimizer in self.optimizers.items():
            scalars[f"lr/{name}"] = optimizer.param_groups[0]["lr"]
        for name, value in scalars.items():
            self.writer.add_scalar(
                f"train/{name}" if not name.startswith("diag/") else name, value, self.step
            )
        for name in ("alpha", "phi_self", "phi_mutual"):
            values = getattr(out, name)
            if values is not None:
                self.writer.add_histogram(
                    f"train/smc/{name}_hist", values.detach().float().cpu(), self.step
                )
        shown = {"loss": "total", "alpha": "smc/alpha", "lambda": "lambda"}
        bar.set_postfix({k: f"{scalars[v]:.3g}" for k, v in shown.items() if v in scalars})
        logger.info(
            "step %d/%d %s",
            self.step,
            self.max_iterations,
            " ".join(f"{k}={v:.4g}" for k, v in scalars.items()),
        )

    def _pseudo_label_dice(self, out: StepOutput, truth: UnlabeledTruth) -> dict[str, torch.Tensor]:
        """Dice of each teacher's pseudo-labels against the unlabeled ground truth (paper Fig. 6),
        as 0-dim device tensors: computed every step and averaged over the logging interval like
        the other scalars (one batch alone is too noisy to read), without a read-back. Also the
        ensemble's pooled-Dice sums per domain (:func:`pooled_dice_terms`), which :meth:`_log`
        turns into its Dice on each domain's unlabeled images over the interval.
        Diagnostics only: computed here, after the step, from the labels the step returned."""
        names = self.spec.region_names
        scalars = {}
        for source, labels in out.pseudo_labels.items():
            dice = pooled_region_dice(labels, truth.masks, self.regions)
            scalars.update({f"diag/pseudo_dice/{source}/{r}": dice[j] for j, r in enumerate(names)})
        if "ensemble" in out.pseudo_labels:
            scalars[DOMAIN_DICE_TERMS] = pooled_dice_terms(
                out.pseudo_labels["ensemble"],
                truth.masks,
                self.regions,
                truth.domains,
                len(self.spec.domains),
            )
        return scalars

    def _domain_dice(self, mean_terms: list[float]) -> dict[str, float]:
        """``diag/pseudo_dice_by_domain/ensemble/<domain>/<region>`` from the interval's mean
        :func:`pooled_dice_terms` (flat); domains without an unlabeled image in the interval are
        left out, and a region empty in both maps counts as Dice 1, as in the batch Dice."""
        terms = torch.tensor(mean_terms).reshape(3, len(self.spec.domains), len(self.regions))
        overlap, sizes, images = terms
        dice = dice_from_terms(overlap, sizes)
        return {
            f"diag/pseudo_dice_by_domain/ensemble/{domain}/{region}": float(dice[g, j])
            for g, domain in enumerate(self.spec.domains)
            for j, region in enumerate(self.spec.region_names)
            if images[g, j] > 0
        }

    # ----------------------------------------------------------------------------------- evaluation
    def evaluate(self, examples: dict[str, list] | None = None) -> dict[str, Any]:
        """Evaluate the configured students (and teachers on request) on every domain of
        ``self.eval_split`` (the validation split when ``data.val_fraction`` > 0, else test)."""
        cfg = self.config.eval
        predictors = build_predictors(self.models, self.sizes, cfg.models, teachers=cfg.teachers)

        def keep_examples(model: str, domain: str, payload: dict) -> None:
            if examples is not None and len(examples.setdefault(f"{model}/{domain}", [])) == 0:
                examples[f"{model}/{domain}"].append(payload)

        self._eval_modes()
        try:  # fp32, no autocast, as the reference's test(): bf16 would flip near-tie pixels
            return evaluate(
                predictors,
                self.eval_sets,
                self.spec,
                patch_size=self.sizes.patch,
                device=self.device,
                batch_size=cfg.batch_size,
                penalty=cfg.empty_distance_penalty,
                on_batch=keep_examples,
                progress=False,
            )
        finally:
            self._train_modes()

    def evaluate_and_save(self) -> dict[str, Any]:
        """Evaluate; write eval/<step>.json and TensorBoard; save last.pt and maybe best.pt."""
        self._check_finite(self.state())  # no evaluation, eval/ file or checkpoint of nan weights
        examples: dict[str, list] = {}
        results = self.evaluate(examples)
        eval_dir = self.run_dir / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / f"{self.step}.json").write_text(
            json.dumps(
                {"step": self.step, "split": self.eval_split, "results": to_json_ready(results)},
                indent=1,
            )
        )
        self._log_eval(results, examples)
        metric = self._selection_metric(results)
        if metric > self.best["metric"]:
            self.best = {"metric": metric, "step": self.step}
            self._save_checkpoints("best", "last")
        else:
            self._save_checkpoints("last")
        logger.info(
            "evaluation on the %s split at step %d (best mean Dice %.4f at step %s):\n%s",
            self.eval_split,
            self.step,
            self.best["metric"],
            self.best["step"],
            format_table(results, self.spec),
        )
        return results

    def _selection_metric(self, results: dict[str, Any]) -> float:
        name = self.config.eval.select_model
        if name not in results:
            name = next(iter(results))
        value = results[name]["mean"]["mean"]["dice"]
        return -math.inf if value is None or math.isnan(value) else value

    def _log_eval(self, results: dict[str, Any], examples: dict[str, list]) -> None:
        tag = "eval" if self.eval_split == "test" else self.eval_split
        for model, result in results.items():
            for domain, values in result["domains"].items():
                for region, metrics in values["regions"].items():
                    self.writer.add_scalar(
                        f"{tag}/{model}/{domain}/{region}/dice", metrics["dice"], self.step
                    )
            for metric, value in result["mean"]["mean"].items():
                self.writer.add_scalar(f"{tag}/{model}/mean/{metric}", value, self.step)
        self._log_prediction_grid(examples, tag)

    def _log_prediction_grid(self, examples: dict[str, list], tag: str) -> None:
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
            rows.append(
                prediction_grid(images, first["target"][:n].cpu(), preds, self.spec.num_classes + 1)
            )
        if rows:
            self.writer.add_image(f"{tag}/predictions", torch.cat(rows, dim=1), self.step)

    # ------------------------------------------------------------------------------ finite guards
    # A non-finite value is found at the next log (every train.log_interval steps, on the sums the
    # log reads anyway) or before the next evaluation or checkpoint, whichever comes first: the
    # weights may hold nan for up to that many steps, but no checkpoint or evaluation ever does.
    def _check_losses(self) -> None:
        """Raise :class:`DivergedError` if a scalar of the steps since the last log is not
        finite, naming the first step and the terms (one host transfer)."""
        bad, finite_steps = self.meter.nonfinite()
        if bad:
            first = self.step - self.meter.steps + finite_steps + 1
            terms = ", ".join(f"{name}={value}" for name, value in bad.items())
            self._diverged(
                f"a loss term is not finite from step {first} on: {terms} at step {self.step}"
            )

    def _check_finite(self, state: dict[str, Any]) -> None:
        """:meth:`_check_losses`, then the weights of ``state`` (what a checkpoint would hold):
        a step with a finite loss can still leave inf weights behind."""
        self._check_losses()
        tensors = [
            (name, tensor)
            for name, weights in state["models"].items()
            for tensor in (weights or {}).values()
            if tensor.is_floating_point()
        ]
        if not tensors:
            return
        finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
        bad = dict.fromkeys(name for (name, _), ok in zip(tensors, finite) if not ok)
        if bad:
            self._diverged(f"weights of {', '.join(bad)} not finite after step {self.step}")

    def _diverged(self, what: str) -> None:
        kept = "no checkpoint was written"
        if self.saved_step is not None:
            kept = f"checkpoints/ left as they were (last.pt: step {self.saved_step})"
        raise DivergedError(
            f"training diverged: {what} (checked every train.log_interval="
            f"{self.config.train.log_interval} steps and before each checkpoint); {kept}"
        )

    # ---------------------------------------------------------------------------------- checkpoints
    def _save_checkpoints(self, *names: str) -> None:
        """Write ``checkpoints/<name>.pt`` for each name, once :meth:`_check_finite` passed."""
        state = self.state()
        self._check_finite(state)
        for name in names:
            save_checkpoint(state, self.run_dir / "checkpoints" / f"{name}.pt")
        self.saved_step = self.step

    def state(self) -> dict[str, Any]:
        """Everything needed to resume or to evaluate this run (see utils/checkpoint.py)."""
        m = self.models

        def weights(model: nn.Module | None, trainable_only: bool) -> dict | None:
            if model is None:
                return None
            return model.trainable_state_dict() if trainable_only else model.state_dict()

        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "config": config_to_dict(self.config),
            "models": {
                "unet": weights(m.unet, False),
                "unet_teacher": weights(m.unet_teacher, False),
                "foundation": weights(m.foundation, True),
                "foundation_teacher": weights(m.foundation_teacher, True),
            },
            "foundation_base": {
                "name": self.config.model.foundation,
                "checkpoint": self.config.model.checkpoint,
            },
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "best": dict(self.best),
            "rng": rng,
            "sampler": {
                "labeled": self.labeled_batches.state_dict(),
                "unlabeled": self.unlabeled_batches.state_dict(),
            },
        }

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        load_model_states(self.models, state["models"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["rng"]["generator"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.labeled_batches.load_state_dict(state["sampler"]["labeled"])
        self.unlabeled_batches.load_state_dict(state["sampler"]["unlabeled"])
        self.step, self.best = state["step"], state["best"]
        self.saved_step = self.step
        logger.info("resumed from %s at step %d", path, self.step)
