"""Loading pretrained SAM-family checkpoints (SAM, MedSAM, LiteMedSAM) into a
:class:`~networks.segmenter.PromptFreeSegmenter` by tensor name.

:func:`read_state_dict` reads a weights file safely (tensors only, never code);
:func:`load_pretrained` matches its tensors to the model's, resizes those the caller gives a
resizer for (the ViT's positional tables), partly loads the per-token decoder heads and records
every decision in a :class:`LoadReport`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from networks.segmenter import PromptFreeSegmenter, format_names

logger = logging.getLogger(__name__)

# Decoder tensors with one entry per mask token: they are adapted to C + 1 tokens on loading.
DECODER_HEADS = (
    "mask_decoder.mask_tokens.",
    "mask_decoder.output_hypernetworks_mlps.",
    "mask_decoder.iou_prediction_head.",
)


def _modules(names: list[str]) -> list[str]:
    """Tensor names collapsed to their modules, a hypernetwork MLP counting as one module."""
    modules = [re.sub(r"\.(weight|bias)$", "", n) for n in names]
    modules = [re.sub(r"(output_hypernetworks_mlps\.\d+)\.layers\.\d+$", r"\1", m) for m in modules]
    return list(dict.fromkeys(modules))


@dataclass
class LoadReport:
    """What loading a pretrained checkpoint did, tensor by tensor (``state_dict`` names)."""

    source: str
    loaded: list[str] = field(default_factory=list)  # copied unchanged
    resized: list[str] = field(default_factory=list)  # interpolated to this model's size
    partial: list[str] = field(default_factory=list)  # some rows from the checkpoint
    initialised: list[str] = field(default_factory=list)  # kept at their fresh initialisation
    skipped: list[str] = field(default_factory=list)  # checkpoint decoder heads not used
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys this model lacks

    def summary(self) -> str:
        """A few lines: counts per category and the names that matter."""
        lora = [n for n in self.initialised if ".lora_" in n]
        other = [n for n in self.initialised if ".lora_" not in n]
        lines = [
            f"loaded {self.source}: {len(self.loaded)} tensors unchanged, "
            f"{len(self.resized)} resized, {len(self.partial)} partial, "
            f"{len(self.initialised)} initialised, {len(self.skipped)} skipped, "
            f"{len(self.unexpected)} unexpected",
            f"  resized: {format_names(self.resized, 12)}",
            f"  partial: {format_names(self.partial)}",
            f"  initialised: {len(lora)} LoRA tensors; modules {format_names(_modules(other), 8)}",
            f"  skipped (checkpoint modules): {format_names(_modules(self.skipped), 8)}",
            f"  unexpected: {format_names(self.unexpected)}",
        ]
        return "\n".join(lines)


# torch.load(weights_only=True) names the global a file asks for in a multi-line message.
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error: ([^\n]*)")


def load_error_reason(error: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed on a file.

    The safe unpickler refuses any global outside tensors and plain containers: such a file
    could run code when loaded, so the reason says it was refused (and never suggests loading it
    with ``weights_only=False``). Anything else is a damaged or truncated file.
    """
    text = str(error)
    unsafe = _UNSAFE_GLOBAL.search(text)
    if unsafe:
        return (
            f"refused: it asks for {unsafe[1]}, which loading could run as code; a weights file "
            "holds only tensors, numbers, strings and containers"
        )
    rejected = _UNPICKLER_ERROR.search(text)
    if rejected:
        return f"refused by the safe unpickler: {rejected[1].strip()}"
    return f"truncated or damaged: {first_line(error)}"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file (on the CPU, tensors only) and return its flat state dict.

    A dict wrapping the state dict under ``"model"`` or ``"state_dict"`` is unwrapped.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if the file is not a PyTorch state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types; all mean "not a state dict"
        reason = load_error_reason(error)
        raise ValueError(f"{path}: cannot be read as a PyTorch state dict ({reason})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(state)}")
    return state


Resizer = Callable[[torch.Tensor, torch.Size], torch.Tensor]


def _adapt_head(key: str, value: torch.Tensor, current: torch.Tensor) -> torch.Tensor | None:
    """The mask tokens take the checkpoint's first rows; other heads load only if they fit."""
    if key == "mask_decoder.mask_tokens.weight" and value.shape[1:] == current.shape[1:]:
        rows = min(len(value), len(current))
        adapted = current.detach().clone()
        adapted[:rows] = value[:rows]
        return adapted
    return None


def load_pretrained(
    model: PromptFreeSegmenter,
    state: Mapping[str, torch.Tensor],
    source: str,
    resizers: Mapping[str, Resizer] | None = None,
) -> LoadReport:
    """Load ``state`` into ``model`` by name, adapting what differs in a known way.

    Tensors of the same name and shape are copied; those named in ``resizers`` are resized; the
    per-token decoder heads (mask tokens, hypernetwork MLPs, IoU head) load where they fit and
    keep their initialisation otherwise; LoRA keeps its initialisation. Anything else that does
    not match means another architecture. The report is logged, stored in
    ``model.load_report`` and returned.

    Raises:
      ValueError: naming ``source`` and the first mismatching tensor, if the checkpoint is not of
        this model's architecture.
    """
    if not any(k.startswith("image_encoder.") for k in state):
        raise ValueError(
            f"{source} is not a SAM-style checkpoint: expected keys image_encoder.*, "
            f"prompt_encoder.*, mask_decoder.*; found {format_names(sorted(state), 3)}"
        )
    target = model.state_dict()
    report = LoadReport(source)
    updates = _match(model, target, state, resizers or {}, report)
    for key in state:
        if key in target:
            continue
        if key.startswith("image_encoder."):
            raise ValueError(f"{source} does not fit {model.name}: unknown encoder tensor {key}")
        (report.skipped if key.startswith(DECODER_HEADS) else report.unexpected).append(key)
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)  # state_dict tensors share storage with the model
    # Re-apply the mode: TinyViT rebuilds its cached attention bias from the loaded weights.
    model.train(model.training)
    model.load_report = report
    logger.info(report.summary())
    return report


def _match(
    model: PromptFreeSegmenter,
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    resizers: Mapping[str, Resizer],
    report: LoadReport,
) -> dict[str, torch.Tensor]:
    """The value each model tensor takes from ``state``; fills ``report`` as it goes."""
    lora = {n for n, _ in model.lora_named_parameters()}
    updates: dict[str, torch.Tensor] = {}
    for key, current in target.items():
        value = state.get(key)
        head = key.startswith(DECODER_HEADS)
        if key in lora or (value is None and head):
            report.initialised.append(key)
        elif value is None:
            raise ValueError(
                f"{report.source} does not fit {model.name}: it has no tensor {key} "
                f"(expected shape {tuple(current.shape)})"
            )
        elif value.shape == current.shape:
            updates[key] = value
            report.loaded.append(key)
        elif key in resizers:
            updates[key] = resizers[key](value.float(), current.shape)
            report.resized.append(key)
        elif head and (adapted := _adapt_head(key, value, current)) is not None:
            updates[key] = adapted
            rows = min(len(value), len(current))
            report.partial.append(f"{key} (rows 0..{rows - 1} of the checkpoint's {len(value)})")
        elif head:
            report.initialised.append(key)
            report.skipped.append(key)
        else:
            raise ValueError(
                f"{report.source} does not fit {model.name}: {key} has shape "
                f"{tuple(value.shape)}, expected {tuple(current.shape)}"
            )
    return updates
