"""SAM / MedSAM ViT as a prompt-free, LoRA-adapted segmenter at any input size.

Built from the upstream ``segment_anything`` modules (not a fork): ``ImageEncoderViT`` at input
size S, SAM's prompt encoder for S, and a mask decoder with C + 1 mask tokens. Pretrained 1024-px
SAM/MedSAM checkpoints load by name with the position embedding and the global-attention blocks'
relative-position tables resized to S (:func:`load_sam_checkpoint`).

Optionally (default on) each encoder attention layer is replaced by :class:`SDPAttention`, the
same computation through ``F.scaled_dot_product_attention``, which lets PyTorch pick a fused
kernel on the GPU. The decomposed relative-position term either goes in as an additive attention
mask (``mask``) or is folded into extra query/key channels (``folded``), which needs no mask and
so admits flash attention; :func:`set_vit_attention` switches between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, ImageEncoderViT, get_rel_pos
from torch import nn

from networks.lora import add_lora, vit_qkv_index
from networks.pretrained import LoadReport, load_pretrained, read_state_dict
from networks.segmenter import (
    PROMPT_DIM,
    PromptFreeSegmenter,
    build_mask_decoder,
    build_prompt_encoder,
)

PATCH_SIZE = 16


@dataclass(frozen=True)
class ViTVariant:
    """Architecture of a SAM image encoder (as in upstream ``build_sam.py``)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    image_size: int = 512  # default input size S of the segmenter (the reference uses 512)


VIT_VARIANTS: dict[str, ViTVariant] = {
    "vit_b": ViTVariant(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ViTVariant(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ViTVariant(1280, 32, 16, (7, 15, 23, 31)),
    # Random-weight test model: 4x4 tokens in 3x3 windows exercises padding and partitioning.
    "tiny": ViTVariant(64, 2, 2, (1,), window_size=3, image_size=64),
}


def _relative_index(size: int) -> torch.Tensor:
    """(size, size) long: index into a (2*size-1)-row table of the offset q - k."""
    coords = torch.arange(size)
    return coords[:, None] - coords[None, :] + (size - 1)


VIT_ATTENTION_MODES = ("mask", "folded")


def _key_one_hot(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot row and column of each key of an (height, width) grid, keys in raster order:
    (height * width, height) and (height * width, width) float tensors of 0 and 1."""
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return F.one_hot(rows, height).float(), F.one_hot(cols, width).float()


class SDPAttention(nn.Module):
    """Upstream SAM ViT ``Attention`` computed with ``F.scaled_dot_product_attention``.

    It takes over the upstream module's parameters under the same names (``qkv``, ``proj``,
    ``rel_pos_h``, ``rel_pos_w``), so checkpoints and LoRA see no difference. The decomposed
    relative-position term, q . R_h[qh - kh] + q . R_w[qw - kw] (q unscaled, as upstream), is
    computed as rel_h (per query, one value per key row) and rel_w (one per key column) and then
    enters the attention in one of two ways (``self.mode``, see :func:`set_vit_attention`):

    - ``mask``: expanded to a (B, heads, N, N) float mask. Flash attention takes no mask, so the
      GPU runs the memory-efficient kernel, and the mask and its gradient are materialised.
    - ``folded``: appended to the queries as H + W channels, with one-hot key rows and columns
      appended to the keys, so that q' . k' = scale * q . k + rel_h[kh] + rel_w[kw] exactly
      (scale folded into q, SDPA scale 1). Channels are zero-padded to a multiple of 8 and v
      to the same width (flash attention wants one head size), and the padding is cut off the
      output. No mask, so flash attention qualifies, at the price of a wider head
      (64 -> 128 channels for ViT-B at 512 px).

    Both are equal to upstream up to rounding (tests/test_sam.py). The gather indexes and one-hot
    keys are cached as buffers so no index tensor is built on the host per call.

    Arguments:
      attention (Attention): the upstream module to replace.
    """

    def __init__(self, attention: Attention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.scale = attention.scale
        self.qkv = attention.qkv
        self.proj = attention.proj
        self.use_rel_pos = attention.use_rel_pos
        self.mode = "mask"
        if self.use_rel_pos:
            self.rel_pos_h = attention.rel_pos_h
            self.rel_pos_w = attention.rel_pos_w
            self.size = ((len(self.rel_pos_h) + 1) // 2, (len(self.rel_pos_w) + 1) // 2)
            # On the replaced module's device: a layer built from a model already on the GPU
            # must not keep its buffers on the host.
            device = self.rel_pos_h.device
            key_h, key_w = _key_one_hot(*self.size)
            buffers = {
                "index_h": _relative_index(self.size[0]),
                "index_w": _relative_index(self.size[1]),
                "key_h": key_h,
                "key_w": key_w,
            }
            for name, buffer in buffers.items():
                self.register_buffer(name, buffer.to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H, W, dim); B counts windows for windowed blocks."""
        B, H, W, _ = x.shape
        # (3, B, heads, H*W, head_dim)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        elif self.mode == "folded":
            x = self._folded_attention(q, k, v, H, W)
        else:
            rel_h, rel_w = self._rel_pos_terms(q, H, W)
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(B, H, W, -1))

    def _rel_pos_terms(self, q: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, heads, H*W, head_dim) queries -> rel_h (B, heads, H*W, H), rel_w (..., W): each
        query's relative-position logit for every key row and every key column."""
        if self.size == (H, W):
            Rh, Rw = self.rel_pos_h[self.index_h], self.rel_pos_w[self.index_w]
        else:  # another grid than the tables were made for: upstream interpolates them
            Rh, Rw = get_rel_pos(H, H, self.rel_pos_h), get_rel_pos(W, W, self.rel_pos_w)
        B, heads, N, dim = q.shape
        r_q = q.reshape(B, heads, H, W, dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh.to(q.dtype))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw.to(q.dtype))
        return rel_h.reshape(B, heads, N, H), rel_w.reshape(B, heads, N, W)

    def _folded_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, H: int, W: int
    ) -> torch.Tensor:
        """Attention with the relative-position term in extra q/k channels (see the class
        docstring): (B, heads, N, head_dim) q, k, v -> (B, heads, N, head_dim)."""
        rel_h, rel_w = self._rel_pos_terms(q, H, W)
        if self.size == (H, W):
            key_h, key_w = self.key_h, self.key_w
        else:
            key_h, key_w = (t.to(q.device) for t in _key_one_hot(H, W))
        B, heads, N, dim = q.shape
        width = dim + H + W
        pad = -width % 8
        q_wide = torch.cat([q * self.scale, rel_h, rel_w, q.new_zeros(B, heads, N, pad)], -1)
        keys = torch.cat([key_h, key_w, key_h.new_zeros(N, pad)], -1).to(k.dtype)
        k_wide = torch.cat([k, keys.expand(B, heads, N, H + W + pad)], -1)
        v_wide = F.pad(v, (0, width + pad - dim))
        out = F.scaled_dot_product_attention(q_wide, k_wide, v_wide, scale=1.0)
        return out[..., :dim]


def check_vit_attention(mode: str) -> None:
    """Raise ValueError, naming ``model.vit_attention``, unless ``mode`` is a known mode."""
    if mode not in VIT_ATTENTION_MODES:
        raise ValueError(
            f"model.vit_attention: unknown {mode!r}; expected one of {list(VIT_ATTENTION_MODES)}"
        )


def set_vit_attention(model: nn.Module, mode: str) -> int:
    """Set how every :class:`SDPAttention` in ``model`` applies the relative-position term
    (``mask`` or ``folded``, see :class:`SDPAttention`); the weights are untouched.

    Returns:
      The number of attention layers set (0 for models without them, e.g. LiteMedSAM).

    Raises:
      ValueError: ``mode`` is not one of ``VIT_ATTENTION_MODES``.
    """
    check_vit_attention(mode)
    layers = [m for m in model.modules() if isinstance(m, SDPAttention)]
    for layer in layers:
        layer.mode = mode
    return len(layers)


class SamSegmenter(PromptFreeSegmenter):
    """A ViT SAM/MedSAM segmenter (see :class:`PromptFreeSegmenter`); logits at S/4."""

    def __init__(
        self, *args: Any, variant: str, global_attn_indexes: tuple[int, ...], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.variant = variant
        self.global_attn_indexes = global_attn_indexes


def build_sam_segmenter(
    variant: str = "vit_b",
    *,
    num_classes: int,
    in_channels: int = 1,
    image_size: int | None = None,
    lora_rank: int = 4,
    fast_attention: bool = True,
) -> SamSegmenter:
    """Build a randomly initialised prompt-free ViT segmenter; load weights with
    :func:`load_sam_checkpoint`.

    Arguments:
      variant (str): a key of ``VIT_VARIANTS`` (vit_b, vit_l, vit_h, tiny).
      num_classes (int): foreground classes C (the decoder has C + 1 mask tokens).
      in_channels (int): 1 or 3 image channels.
      image_size (int or None): input size S, a multiple of 16; None = the variant's default.
      lora_rank (int): rank of the LoRA on q and v of every encoder block.
      fast_attention (bool): use :class:`SDPAttention` in the encoder.
    """
    if variant not in VIT_VARIANTS:
        raise ValueError(f"unknown ViT variant {variant!r}; expected one of {list(VIT_VARIANTS)}")
    spec = VIT_VARIANTS[variant]
    size = spec.image_size if image_size is None else image_size
    if size <= 0 or size % PATCH_SIZE:
        raise ValueError(f"{variant}: image_size must be a positive multiple of 16, got {size}")
    encoder = ImageEncoderViT(
        img_size=size,
        patch_size=PATCH_SIZE,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=PROMPT_DIM,
    )
    for p in encoder.parameters():
        p.requires_grad_(False)
    for block in encoder.blocks:
        if fast_attention:
            block.attn = SDPAttention(block.attn)
        add_lora(block.attn, lora_rank, *vit_qkv_index(spec.embed_dim))
    grid = size // PATCH_SIZE
    return SamSegmenter(
        encoder,
        build_prompt_encoder(size, grid),
        build_mask_decoder(num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=size,
        logits_size=4 * grid,
        name=f"{variant} segmenter at {size} px",
        variant=variant,
        global_attn_indexes=spec.global_attn_indexes,
    )


def resize_pos_embed(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(1, H, W, C) absolute position embedding -> ``shape``, bilinear, align_corners False."""
    grid = F.interpolate(
        value.permute(0, 3, 1, 2), size=tuple(shape[1:3]), mode="bilinear", align_corners=False
    )
    return grid.permute(0, 2, 3, 1)


def resize_rel_pos(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(L, C) relative-position table -> (L', C), linear along L, align_corners False."""
    table = F.interpolate(value.t()[None], size=shape[0], mode="linear", align_corners=False)
    return table[0].t()


def load_sam_checkpoint(segmenter: SamSegmenter, path: str | Path) -> LoadReport:
    """Load a SAM or MedSAM checkpoint (an upstream ``Sam`` state dict, any input size).

    ``image_encoder.pos_embed`` is resized bilinearly to the segmenter's grid; the relative-
    position tables of the global-attention blocks (by block index) are resized linearly;
    the windowed blocks' tables depend only on the window size and load unchanged. Decoder heads
    load where they fit (mask tokens: the first C + 1 of the checkpoint's 4; hypernetwork MLPs
    0..C where present; the IoU head's last layer only if its shape matches); LoRA and the rest
    keep their initialisation. The report is logged and returned.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: naming the file and the mismatch, for a checkpoint of another architecture.
    """
    resizers = {"image_encoder.pos_embed": resize_pos_embed}
    for i in segmenter.global_attn_indexes:
        for axis in "hw":
            resizers[f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"] = resize_rel_pos
    return load_pretrained(segmenter, read_state_dict(path), str(path), resizers)
