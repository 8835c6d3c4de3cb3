"""What every foundation segmenter shares: prompt-free SAM decoding over a frozen, LoRA-adapted
image encoder and the trainable-state API. Loading pretrained weights is in
:mod:`networks.pretrained`.

A segmenter composes three parts as SAM does: an ``image_encoder`` (ViT or TinyViT, frozen apart
from its LoRA adapters), the upstream ``prompt_encoder`` and ``mask_decoder``. It is run without
prompts; ``MaskDecoder.predict_masks`` returns all C + 1 mask logits, channel 0 (SAM's
single-mask token) being background. Trainable: LoRA, mask decoder, prompt encoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from networks.lora import LoRAQKV, lora_parameters

if TYPE_CHECKING:  # only for annotations: networks.pretrained imports this module
    from networks.pretrained import LoadReport

PROMPT_DIM = 256


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
                f"{self.name}: trainable state does not match: missing {format_names(missing)}, "
                f"unknown {format_names(unknown)}"
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


def format_names(names: list[str], limit: int = 5) -> str:
    """Up to ``limit`` names, comma-separated, then "(+N more)"; "none" for an empty list."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown
