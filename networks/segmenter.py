"""What every foundation segmenter shares: prompt-free SAM decoding over a frozen, LoRA-adapted
image encoder, the trainable-state API, and name-based loading of pretrained weights.

A segmenter composes three parts as SAM does: an ``image_encoder`` (ViT or TinyViT, frozen apart
from its LoRA adapters), the upstream ``prompt_encoder`` and ``mask_decoder``. It is run without
prompts; ``MaskDecoder.predict_masks`` returns all C + 1 mask logits, channel 0 (SAM's
single-mask token) being background. Trainable: LoRA, mask decoder, prompt encoder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from networks.lora import LoRAQKV, lora_parameters

logger = logging.getLogger(__name__)

PROMPT_DIM = 256
# Decoder tensors with one entry per mask token: they are adapted to C + 1 tokens on loading.
DECODER_HEADS = (
    "mask_decoder.mask_tokens.",
    "mask_decoder.output_hypernetworks_mlps.",
    "mask_decoder.iou_prediction_head.",
)


def build_prompt_encoder(input_size: int, embedding_size: int) -> PromptEncoder:
    """SAM's prompt encoder for a square ``input_size`` image and its embedding grid."""
    return PromptEncoder(
        embed_dim=PROMPT_DIM,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )


def build_mask_decoder(num_classes: int) -> MaskDecoder:
    """SAM's mask decoder with C + 1 mask tokens (C = ``num_classes`` multimask outputs)."""
    return MaskDecoder(
        num_multimask_outputs=num_classes,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


class PromptFreeSegmenter(nn.Module):
    """A SAM-style model run without prompts: (B, Cin, S, S) images -> (B, C+1, S', S') logits.

    Arguments:
      image_encoder (nn.Module): maps (B, 3, S, S) to (B, 256, S/16, S/16) (ViT) or
        (B, 256, 64, 64) (TinyViT); its LoRA adapters, if any, are already inserted.
      prompt_encoder (PromptEncoder): its ``image_embedding_size`` matches the encoder output.
      mask_decoder (MaskDecoder): with ``num_classes`` multimask outputs.
      num_classes (int): foreground classes C.
      in_channels (int): 1 (repeated to 3 channels) or 3.
      input_size (int): S, the side of the square input.
      logits_size (int): S', the side of the output logits (4x the embedding grid).
      name (str): model name used in messages.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        *,
        num_classes: int,
        in_channels: int,
        input_size: int,
        logits_size: int,
        name: str,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"{name}: in_channels must be 1 or 3, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_size = input_size
        self.logits_size = logits_size
        self.name = name
        self.load_report: LoadReport | None = None
        lora = {id(p) for _, p in lora_parameters(image_encoder)}
        for p in image_encoder.parameters():
            p.requires_grad_(id(p) in lora)
        self.train()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          images (torch.Tensor): Bx(in_channels)xSxS float in [0, 1]; no mean/std normalisation
            (MedSAM and LiteMedSAM were trained on [0, 1] inputs).

        Returns:
          torch.Tensor: Bx(C+1)x(logits_size)x(logits_size) float logits, channel 0 background.
        """
        expected = (self.in_channels, self.input_size, self.input_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.name}: expected images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        if self.in_channels == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.decode(self.image_encoder(images))

    def decode(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Prompt-free mask decoding: (B, 256, h, w) embeddings -> (B, C+1, 4h, 4w) logits.

        With no prompts the prompt encoder gives batch-1 embeddings (sparse (1, 0, 256), dense =
        ``no_mask_embed`` broadcast); the decoder's tokens then have batch 1 and broadcast against
        the B image embeddings inside the two-way transformer, so each image is decoded once.
        """
        sparse, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
        # The positional encoding is sin/cos of a matmul whose outputs reach tens of radians:
        # under bf16 autocast its error would reach 0.15 on values in [-1, 1], so keep it fp32.
        with torch.autocast(image_embeddings.device.type, enabled=False):
            image_pe = self.prompt_encoder.get_dense_pe()
        logits, _ = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return logits

    def train(self, mode: bool = True) -> PromptFreeSegmenter:
        """Set the mode of the decoder and LoRA; the frozen encoder always stays in eval mode.

        Eval mode keeps BatchNorm on its pretrained running statistics (TinyViT) and TinyViT's
        cached attention bias ``ab``, which its attention layers rebuild on ``train(False)``.
        """
        super().train(mode)
        self.image_encoder.eval()
        for module in self.image_encoder.modules():
            if isinstance(module, LoRAQKV):
                module.train(mode)
        return self

    def lora_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(full name, parameter) of the LoRA adapters."""
        return [(f"image_encoder.{n}", p) for n, p in lora_parameters(self.image_encoder)]

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """LoRA, mask decoder and prompt encoder parameters, whatever their ``requires_grad``
        (an EMA teacher turns it off but has the same trainable set)."""
        yield from self.lora_named_parameters()
        for part in ("mask_decoder", "prompt_encoder"):
            for n, p in getattr(self, part).named_parameters():
                yield f"{part}.{n}", p

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should update."""
        return [p for _, p in self.trainable_named_parameters()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (detached, sharing storage) under their ``state_dict`` names.

        The frozen encoder comes from the pretrained checkpoint and the prompt encoder's
        positional-encoding matrix is a frozen buffer, so neither is included.
        """
        return {n: p.detach() for n, p in self.trainable_named_parameters()}

    @torch.no_grad()
    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a :meth:`trainable_state_dict` back in; names and shapes must match exactly.

        Raises:
          ValueError: on a missing, unknown or wrongly shaped tensor.
        """
        params = dict(self.trainable_named_parameters())
        missing = sorted(set(params) - set(state))
        unknown = sorted(set(state) - set(params))
        if missing or unknown:
            raise ValueError(
                f"{self.name}: trainable state does not match: missing {_names(missing)}, "
                f"unknown {_names(unknown)}"
            )
        for name, value in state.items():
            if value.shape != params[name].shape:
                raise ValueError(
                    f"{self.name}: trainable tensor {name} has shape {tuple(value.shape)}, "
                    f"expected {tuple(params[name].shape)}"
                )
        for name, value in state.items():
            params[name].copy_(value)

    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """Per part: (parameters, parameters with ``requires_grad``).

        Parts: ``encoder`` (frozen image encoder without LoRA), ``lora``, ``mask_decoder``,
        ``prompt_encoder`` and ``total``.
        """
        lora = {id(p) for _, p in self.lora_named_parameters()}
        parts = {
            "encoder": [p for p in self.image_encoder.parameters() if id(p) not in lora],
            "lora": [p for _, p in self.lora_named_parameters()],
            "mask_decoder": list(self.mask_decoder.parameters()),
            "prompt_encoder": list(self.prompt_encoder.parameters()),
            "total": list(self.parameters()),
        }
        return {
            part: (sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad))
            for part, ps in parts.items()
        }


def _names(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown


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
            f"  resized: {_names(self.resized, 12)}",
            f"  partial: {_names(self.partial)}",
            f"  initialised: {len(lora)} LoRA tensors; modules {_names(_modules(other), 8)}",
            f"  skipped (checkpoint modules): {_names(_modules(self.skipped), 8)}",
            f"  unexpected: {_names(self.unexpected)}",
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
            f"prompt_encoder.*, mask_decoder.*; found {_names(sorted(state), 3)}"
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
