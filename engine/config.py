"""Typed experiment configuration: YAML files give the values, the command line overrides them.

The ``method`` section is the method's own dataclass (:class:`method.config.MethodConfig`); the
other sections (data, model, optim, train, eval) are the engine's and live here.

A config file may name a ``base:`` file (relative to itself) that it overlays, one level or more.
Every key must exist in the dataclasses below and have the right type; unknown keys and type
mismatches are errors that name the key. The resolved config is written to the run directory and
stored in every checkpoint, so a run can be rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from method.config import MethodConfig


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a name registered in dataloaders/specs.py
    root: str = "data/synthetic"  # folder holding the dataset's native layout
    lb_domain: str = "1"  # labeled domain: 1-based index or folder name
    # labeled images (patients for ACDC-like specs) from lb_domain; None = all (setting uda)
    lb_num: int | None = 20
    lb_seed: int | None = None  # None: first lb_num files (sorted), as the reference; int: random
    labeled_bs: int = 4  # labeled images per iteration
    unlabeled_bs: int = 4  # unlabeled images per iteration (copy-paste pairs them: must be equal)
    canvas_size: int | None = None  # cached square canvas; None = max(foundation input, patch)
    patch_size: int | None = None  # U-Net input and metric resolution; None = the spec's
    # > 0: hold out the last ceil(val_fraction * n) train files of each domain; evaluations during
    # training (eval/, best.pt) then use them instead of the test split. 0 = the reference.
    val_fraction: float = 0.0
    # midss | ssmis | uda | le-uda: default unlabeled / evaluated domains (dataloaders/settings.py)
    setting: str = "midss"
    unlabeled_domains: tuple[str, ...] | None = None  # None = the setting's; else names/indices
    eval_domains: tuple[str, ...] | None = None  # None = the setting's; else names/indices


@dataclass
class ModelConfig:
    foundation: str = "litemedsam"  # litemedsam | medsam_vit_b | sam_vit_b | vit_l | vit_h | tiny
    checkpoint: str | None = None  # SAM/MedSAM weights (.pth) for the ViT foundation models
    image_size: int | None = None  # foundation input; None = LiteMedSAM 256, else the spec (512)
    lora_rank: int = 4  # LoRA rank on q and v of every encoder block
    unet_width: int = 64  # U-Net channels at the first level (64 = the reference's 31M U-Net)
    # How SAM ViT attention applies its relative-position term: mask (an additive SDPA mask) |
    # folded (extra q/k channels, flash-attention eligible). Same numbers; see networks/sam.py.
    vit_attention: str = "folded"


@dataclass
class OptimConfig:
    foundation_lr: float = 1e-4  # AdamW lr (paper; the reference uses 1.2e-4)
    foundation_weight_decay: float = 0.1
    foundation_betas: tuple[float, float] = (0.9, 0.999)
    foundation_warmup: int = 0  # linear warm-up iterations (0 = none, as the reference)
    foundation_schedule: str = "constant"  # constant | poly
    # Iterations over which "poly" decays to 0; None = the paper's run length for the dataset.
    foundation_schedule_iterations: int | None = None
    unet_lr: float = 0.03  # SGD lr
    unet_momentum: float = 0.9
    unet_weight_decay: float = 1e-4
    ema_decay: float = 0.99  # teacher decay cap: min(1 - 1/(t+1), ema_decay)


@dataclass
class TrainConfig:
    max_iterations: int | None = None  # None = the spec's (paper) value
    eval_interval: int = 500  # iterations between evaluations and best-checkpoint updates
    log_interval: int = 50  # iterations between scalar read-backs (TensorBoard, log, tqdm)
    checkpoint_interval: int = 500  # iterations between last.pt writes (also at each eval)
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA
    # bf16 autocast on the CPU too (the training step; evaluation stays fp32): about 2x faster
    # LiteMedSAM on CPUs with bf16 instructions, for reduced-scale CPU studies
    cpu_amp: bool = False
    deterministic: bool = False  # deterministic algorithms, cudnn.benchmark off
    compile: bool = False  # torch.compile the networks' forwards
    # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune |
    # max-autotune-no-cudagraphs
    compile_mode: str = "default"
    # What torch.compile captures: networks (each network's forward) | step (the whole
    # synfoc_step, networks, SMC, copy-paste and losses in one graph)
    compile_scope: str = "networks"
    out: str | None = None  # run directory; None = runs/<dataset>/<name>
    name: str | None = None  # run name; None = train.py's default_run_name


@dataclass
class EvalConfig:
    models: tuple[str, ...] = ("unet", "foundation")  # students evaluated during training
    teachers: bool = False  # also evaluate the EMA teachers
    batch_size: int = 16  # test images per forward
    empty_distance_penalty: float = 100.0  # HD95/ASD (pixels) when exactly one mask is empty
    select_model: str = "foundation"  # whose mean Dice picks best.pt (paper keeps MedSAM)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ConfigError(ValueError):
    """A config file or override names an unknown key or a value of the wrong type."""


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type annotation and convert YAML lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if annotation in (int, float, str, bool) and not (
        isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool))
    ):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    return value


def _apply(section: Any, values: dict[str, Any], prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    hints = typing.get_type_hints(type(section))
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"unknown config key {prefix}{key}; expected one of {', '.join(fields)}"
            )
        setattr(section, key, _coerce(value, hints[key], prefix + key))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    merged = _read_yaml(path.parent / base)
    for section, entries in values.items():
        if isinstance(entries, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **entries}
        else:
            merged[section] = entries
    return merged


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested ``{section: {key: value}}``, checking keys and types."""
    config = Config()
    sections = {f.name for f in dataclasses.fields(config)}
    for name, entries in values.items():
        if name not in sections:
            raise ConfigError(
                f"unknown config section {name!r}; expected one of {sorted(sections)}"
            )
        if not isinstance(entries, dict):
            raise ConfigError(f"config section {name!r} must be a mapping, got {entries!r}")
        _apply(getattr(config, name), entries, f"{name}.")
    return config


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is parsed as YAML (``1e-4``, ``[1, 2]``).

    Raises:
        ConfigError: if the text is not of that form.
    """
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    return section, key, yaml.safe_load(raw) if raw != "" else None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (with its ``base:`` chain) and apply ``section.key=value`` overrides."""
    values = _read_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        section, key, value = parse_override(text)
        values.setdefault(section, {})[key] = value
    return config_from_dict(values)


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML dumps and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {
        section.name: {
            k: plain(v) for k, v in dataclasses.asdict(getattr(config, section.name)).items()
        }
        for section in dataclasses.fields(config)
    }


# What may change when a run resumes: where its files are and how it is driven, not what it
# trains. Any other change would silently turn the run into a different experiment.
RESUMABLE_KEYS = (
    "data.root",
    "model.checkpoint",
    "model.vit_attention",
    "train.max_iterations",
    "train.eval_interval",
    "train.log_interval",
    "train.checkpoint_interval",
    "train.device",
    "train.deterministic",
    "train.compile",
    "train.compile_mode",
    "train.compile_scope",
    "train.out",
    "train.name",
)
RESUMABLE_SECTIONS = ("eval",)


def resumable(key: str) -> bool:
    """Whether ``section.key`` may change when a run resumes (see :data:`RESUMABLE_KEYS`)."""
    return key in RESUMABLE_KEYS or key.split(".")[0] in RESUMABLE_SECTIONS


def config_differences(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """``(section.key, old value, new value)`` for every key that differs, in declaration order."""
    before, after = config_to_dict(old), config_to_dict(new)
    return [
        (f"{section}.{key}", value, after[section][key])
        for section, values in before.items()
        for key, value in values.items()
        if after[section][key] != value
    ]


def check_resumable(saved: Config, requested: Config) -> None:
    """Refuse to resume ``saved`` as ``requested`` if they differ in what the run trains.

    Raises:
        ConfigError: naming every changed key that is not in :data:`RESUMABLE_KEYS` or
            :data:`RESUMABLE_SECTIONS`.
    """
    changed = [
        f"{key} {old!r} -> {new!r}"
        for key, old, new in config_differences(saved, requested)
        if not resumable(key)
    ]
    if changed:
        raise ConfigError(
            f"{saved.train.out} holds a run with other settings ({'; '.join(changed)}); "
            "start a new run with another --out (or train.name), or resume without these changes"
        )


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
