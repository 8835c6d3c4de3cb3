"""The training loop around :func:`method.step.synfoc_step`.

Per iteration: the next augmented batches (:class:`engine.batches.TrainBatches`), one SynFoC step
(docs/METHOD.md, "One iteration") under bf16 autocast on CUDA, one backward, both optimizers,
then the EMA teachers. Scalars stay on the device (:class:`engine.meter.ScalarMeter`) and are
read back once every ``train.log_interval`` steps. Every ``train.eval_interval`` steps the
students are evaluated (:mod:`engine.validation`), ``eval/<step>.json`` is written and ``last.pt``
/ ``best.pt`` are saved (:mod:`engine.checkpoint`), after the finite guards (:mod:`engine.guards`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dataloaders.specs import get_spec
from engine.batches import TrainBatches, UnlabeledTruth
from engine.build import (
    build_data,
    build_models,
    configure_backend,
    run_sizes,
    seed_everything,
    select_device,
)
from engine.checkpoint import (
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from engine.compile import check_compile, compiled_step
from engine.config import Config, config_to_dict
from engine.diagnostics import DOMAIN_DICE_TERMS, PseudoLabelDice
from engine.ema import EmaTensors, ema_lerp, ema_tensors
from engine.guards import diverged, nonfinite_losses, nonfinite_weights
from engine.meter import ScalarMeter
from engine.optim import build_optimizers, set_learning_rates
from engine.validation import evaluate_students, log_evaluation, selection_metric, write_evaluation
from evaluation.report import format_table
from method.batches import LabeledBatch, StepOutput, UnlabeledBatch
from method.config import validate_method
from method.schedules import consistency_ramp, ramp_phase
from method.step import draw_step_boxes, synfoc_step

logger = logging.getLogger(__name__)

# The phases of one iteration (:meth:`Trainer.iterate`), in order, as Trainer.phase names them.
PHASES = ("batches", "forward", "backward", "optimizers + EMA", "diagnostics")
# Seed of the copy-paste stream: train.seed plus this, far from any seed a sweep would use.
COPY_PASTE_SEED_OFFSET = 0x9E3779B9


def untimed_phase(name: str) -> contextlib.AbstractContextManager:
    """The default :attr:`Trainer.phase`: runs a phase as it is."""
    return contextlib.nullcontext()


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
        check_compile(config.train)
        self.device = select_device(config.train.device)
        configure_backend(self.device, config.train.deterministic)
        seed_everything(config.train.seed)
        self.models = build_models(config, self.spec, self.device)
        self.step_models, self.step_fn = compiled_step(config.train, self.models)
        self.sizes = run_sizes(config, self.spec, self.models)
        self.data = build_data(config, self.spec, self.sizes, progress=progress)
        # Training-time evaluations (eval/, best.pt) use the held-out validation split if any.
        self.eval_split = "val" if self.data.val else "test"
        self.eval_sets = self.data.val or self.data.test
        self.max_iterations = config.train.max_iterations or self.spec.max_iterations
        # Schedules span the paper's length (or an explicit horizon), not this run's length.
        self.ramp_iterations = config.method.ramp_iterations or self.spec.max_iterations
        self.lr_iterations = config.optim.foundation_schedule_iterations or self.spec.max_iterations
        self.regions = [classes for _, classes in self.spec.eval_regions]
        self.generator = torch.Generator(device=self.device).manual_seed(config.train.seed)
        # Copy-paste draws come from a stream of their own, so the batches and their augmentation
        # depend on the seed alone: SupOnly and SynFoC of one seed train on the same labeled
        # images in the same order and views, and a paired difference measures the method, not
        # the sampling.
        self.copy_paste_generator = torch.Generator(device=self.device).manual_seed(
            config.train.seed + COPY_PASTE_SEED_OFFSET
        )
        self.batches = TrainBatches(
            self.data.labeled.samples, self.data.unlabeled.samples, self.spec, self.sizes,
            config.data.labeled_bs, self.generator, self.device,
        )  # fmt: skip
        self.optimizers = build_optimizers(self.models, config)
        self.ema_pairs = self._match_teachers()
        self.meter, self.diagnostics = ScalarMeter(), PseudoLabelDice(self.spec)
        # Wraps each phase of an iteration (PHASES); scripts/bench.py times or profiles them.
        self.phase: Callable[[str], contextlib.AbstractContextManager] = untimed_phase
        self.step, self.best = 0, {"metric": -math.inf, "step": None}
        self.saved_step: int | None = None  # step of the newest checkpoint written or resumed
        if resume:
            self._load(self.run_dir / "checkpoints" / "last.pt")
        # Events up to the checkpoint's step (its logs and evaluation) stay; later ones are redone.
        purge_step = self.step + 1 if resume else None
        self.writer = SummaryWriter(self.run_dir / "tb", purge_step=purge_step)

    # ------------------------------------------------------------------------------------ modes
    def train_modes(self) -> None:
        """Students train; teachers use batch statistics (reference) or their EMA'd running ones."""
        teacher_train = self.config.method.teacher_bn == "batch"
        for name in ("unet", "foundation"):
            for model, train in (
                (getattr(self.models, name), True),
                (getattr(self.models, name + "_teacher"), teacher_train),
            ):
                if model is not None:
                    model.train(train)

    def eval_modes(self) -> None:
        for model in vars(self.models).values():
            if model is not None:
                model.eval()

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of the training step: on CUDA with ``train.amp``, on the CPU with
        ``train.cpu_amp``; otherwise fp32."""
        enabled = {"cuda": self.config.train.amp, "cpu": self.config.train.cpu_amp}
        if enabled.get(self.device.type, False):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---------------------------------------------------------------------------- one iteration
    def next_batches(self) -> tuple[LabeledBatch, UnlabeledBatch, UnlabeledTruth]:
        """The next augmented batches and the unlabeled ground truth (diagnostics only)."""
        return self.batches.next()

    def iterate(self) -> StepOutput:
        """One iteration as the training loop runs it: :meth:`train_step`, the step counter, and
        the step's scalars with the pseudo-label diagnostics summed on the device (no read-back;
        :meth:`write_logs` reads the means every ``log_interval`` steps)."""
        out, truth = self.train_step()
        self.step += 1
        with self.phase("diagnostics"):
            self.meter.add({**out.scalars, **self.diagnostics(out, truth)})
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
        set_learning_rates(self.optimizers, self.step, self.config.optim, self.lr_iterations)
        progress = ramp_phase(self.step, self.ramp_iterations)  # the "linear" alpha strategy
        if self.config.train.compile:
            # A new step: CUDA graphs (compile_mode reduce-overhead) may now reuse the memory of
            # the previous step's outputs; without CUDA graphs this only marks the step.
            torch.compiler.cudagraph_mark_step_begin()
        if self.step_fn is not synfoc_step:
            # Inputs of the compiled step, not constants baked into (or recompiling) its graph.
            lam, progress = (torch.full((), v, device=self.device) for v in (lam, progress))
        batch = unlabeled.weak.unet.shape[0]
        box_draws = draw_step_boxes(method, batch, self.copy_paste_generator, self.device)
        with self._autocast():
            return self.step_fn(
                self.step_models, labeled, unlabeled, cfg=method, regions=self.regions,
                lam=lam, progress=progress, box_draws=box_draws,
            )  # fmt: skip

    def backward(self, loss: torch.Tensor) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def update(self) -> None:
        """Both optimizers, then the EMA teachers."""
        for optimizer in self.optimizers.values():
            optimizer.step()
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

    # --------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``max_iterations`` (from the resumed step), then return the last evaluation."""
        train = self.config.train
        results: dict[str, Any] = {}
        self.train_modes()
        bar = tqdm(
            total=self.max_iterations, initial=self.step, disable=not self.progress,
            desc="train", dynamic_ncols=True,
        )  # fmt: skip
        while self.step < self.max_iterations:
            out = self.iterate()
            last = self.step == self.max_iterations
            if self.step % train.log_interval == 0 or last:
                self.write_logs(out, bar)
            if self.step % train.eval_interval == 0 or last:
                results = self.evaluate_and_save()
            elif self.step % train.checkpoint_interval == 0:
                self.save_checkpoints("last")
            bar.update(1)
        bar.close()
        if not results:  # resumed at the end: evaluate once more to report
            results = self.evaluate_and_save()
        logger.info("final evaluation at step %d:\n%s", self.step, format_table(results, self.spec))
        self.writer.close()
        return results

    def write_logs(self, out: StepOutput, bar: tqdm) -> None:
        """The interval's mean scalars (one read-back) to TensorBoard, train.log and the bar,
        with the last step's SMC histograms; stops a diverged run first."""
        self._check_losses()
        scalars = self.meter.read()
        if DOMAIN_DICE_TERMS in scalars:
            scalars.update(self.diagnostics.by_domain(scalars.pop(DOMAIN_DICE_TERMS)))
        for name, optimizer in self.optimizers.items():
            scalars[f"lr/{name}"] = optimizer.param_groups[0]["lr"]
        for name, value in scalars.items():
            tag = name if name.startswith("diag/") else f"train/{name}"
            self.writer.add_scalar(tag, value, self.step)
        for name in ("alpha", "phi_self", "phi_mutual"):
            values = getattr(out, name)
            if values is not None:
                hist = values.detach().float().cpu()
                self.writer.add_histogram(f"train/smc/{name}_hist", hist, self.step)
        shown = {"loss": "total", "alpha": "smc/alpha", "lambda": "lambda"}
        bar.set_postfix({k: f"{scalars[v]:.3g}" for k, v in shown.items() if v in scalars})
        values = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        logger.info("step %d/%d %s", self.step, self.max_iterations, values)

    # ------------------------------------------------------------------------------- evaluation
    def evaluate(self, examples: dict[str, list] | None = None) -> dict[str, Any]:
        """Evaluate the configured students (and teachers on request) on every domain of
        ``self.eval_split`` (the validation split when ``data.val_fraction`` > 0, else test)."""
        self.eval_modes()
        try:
            return evaluate_students(
                self.models, self.sizes, self.config.eval, self.eval_sets, self.spec,
                self.device, examples,
            )  # fmt: skip
        finally:
            self.train_modes()

    def evaluate_and_save(self) -> dict[str, Any]:
        """Evaluate; write eval/<step>.json and TensorBoard; save last.pt and maybe best.pt."""
        self._check_finite(self.state())  # no evaluation, eval/ file or checkpoint of nan weights
        examples: dict[str, list] = {}
        results = self.evaluate(examples)
        write_evaluation(self.run_dir, self.step, self.eval_split, results)
        tag = "eval" if self.eval_split == "test" else self.eval_split
        log_evaluation(self.writer, results, examples, self.spec, tag, self.step)
        metric = selection_metric(results, self.config.eval.select_model)
        if metric > self.best["metric"]:
            self.best = {"metric": metric, "step": self.step}
            self.save_checkpoints("best", "last")
        else:
            self.save_checkpoints("last")
        logger.info(
            "evaluation on the %s split at step %d (best mean Dice %.4f at step %s):\n%s",
            self.eval_split, self.step, self.best["metric"], self.best["step"],
            format_table(results, self.spec),
        )  # fmt: skip
        return results

    # --------------------------------------------------------------------- guards, checkpoints
    def _check_losses(self) -> None:
        """Raise :class:`DivergedError` if a scalar since the last log is not finite."""
        problem = nonfinite_losses(self.meter, self.step)
        if problem:
            raise diverged(problem, self.config.train.log_interval, self.saved_step)

    def _check_finite(self, state: dict[str, Any]) -> None:
        """:meth:`_check_losses`, then the weights of ``state`` (what a checkpoint would hold)."""
        self._check_losses()
        problem = nonfinite_weights(state, self.step)
        if problem:
            raise diverged(problem, self.config.train.log_interval, self.saved_step)

    def save_checkpoints(self, *names: str) -> None:
        """Write ``checkpoints/<name>.pt`` for each name, once :meth:`_check_finite` passed."""
        state = self.state()
        self._check_finite(state)
        for name in names:
            save_checkpoint(state, self.run_dir / "checkpoints" / f"{name}.pt")
        self.saved_step = self.step

    def generators(self) -> dict[str, torch.Generator]:
        """The run's random streams by checkpoint name: batches and augmentation, copy-paste."""
        return {"generator": self.generator, "copy_paste": self.copy_paste_generator}

    def state(self) -> dict[str, Any]:
        """Everything needed to resume or to evaluate this run (see engine/checkpoint.py)."""
        model = self.config.model
        return training_state(
            step=self.step,
            config=config_to_dict(self.config),
            models=self.models,
            foundation_base={"name": model.foundation, "checkpoint": model.checkpoint},
            optimizers=self.optimizers,
            best=self.best,
            generators=self.generators(),
            sampler=self.batches.state_dict(),
            device=self.device,
        )

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        restore_training_state(
            state, models=self.models, optimizers=self.optimizers, generators=self.generators(),
            device=self.device,
        )  # fmt: skip
        self.batches.load_state_dict(state["sampler"])
        self.step, self.best = state["step"], state["best"]
        self.saved_step = self.step
        logger.info("resumed from %s at step %d", path, self.step)
