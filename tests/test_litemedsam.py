"""LiteMedSAM: packaged weights, prompt-free wrapper, per-head LoRA, frozen eval-mode encoder.

A TinyViT forward costs about a second per image on the CPU, so the module runs three encoder
forwards at 256 px in all (packaged model pretrained and random, our wrapper) and one at 128 px,
and tests the rest on the decoder or on single layers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from networks import build_foundation
from networks.litemedsam import build_litemedsam_segmenter, lite_tools, packaged_checkpoint
from networks.segmenter import PromptFreeSegmenter, build_mask_decoder


def blob_image() -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """A bright ellipse on a dark 256x256 background: image (256, 256) in [0, 1], mask, box."""
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    mask = ((yy - 120) / 50) ** 2 + ((xx - 140) / 35) ** 2 <= 1
    return 0.1 + 0.8 * mask.float(), mask, [[95, 60, 185, 180]]  # box x0, y0, x1, y1


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return (2 * (a & b).sum() / (a.sum() + b.sum())).item()


def packaged_model(pretrained: bool) -> torch.nn.Module:
    tools, _ = lite_tools()
    torch.manual_seed(0)
    net = tools.build_lite_medsam()
    if pretrained:
        net.load_state_dict(
            torch.load(packaged_checkpoint(), map_location="cpu", weights_only=True)
        )
    return net.eval()  # eval after loading: TinyViT caches its attention bias on train(False)


@pytest.fixture(scope="module")
def package_run():
    """The package's own box-prompted forward on the blob, and the image embedding it used."""
    image, mask, box = blob_image()
    net = packaged_model(pretrained=True)
    captured = {}
    net.image_encoder.register_forward_hook(lambda m, i, out: captured.update(embedding=out))
    with torch.no_grad():
        logits = net(image.expand(1, 3, 256, 256), box)
    return {"logits": logits, "embedding": captured["embedding"], "mask": mask}


@pytest.fixture(scope="module")
def segmenter():
    return build_litemedsam_segmenter(num_classes=2, in_channels=1)


def test_packaged_weights_are_pretrained(package_run) -> None:
    image, mask, box = blob_image()
    with torch.no_grad():
        random_logits = packaged_model(pretrained=False)(image.expand(1, 3, 256, 256), box)
    assert package_run["logits"].shape == (1, 1, 256, 256)
    pretrained_dice = dice(package_run["logits"][0, 0].sigmoid() > 0.5, mask)
    random_dice = dice(random_logits[0, 0].sigmoid() > 0.5, mask)
    assert pretrained_dice > 0.9
    assert random_dice < 0.5


def test_wrapper_holds_the_packaged_tensors(segmenter) -> None:
    state = torch.load(packaged_checkpoint(), map_location="cpu", weights_only=True)
    ours = segmenter.state_dict()
    for key in (
        "image_encoder.patch_embed.seq.0.c.weight",
        "image_encoder.layers.2.blocks.3.attn.qkv.weight",
        "image_encoder.layers.3.blocks.1.attn.attention_biases",
        "image_encoder.layers.1.downsample.conv1.bn.running_var",
        "image_encoder.neck.0.weight",
        "prompt_encoder.no_mask_embed.weight",
        "mask_decoder.transformer.layers.1.mlp.lin1.weight",
        "mask_decoder.output_hypernetworks_mlps.2.layers.2.bias",
    ):
        assert torch.equal(ours[key], state[key]), key
    tokens = state["mask_decoder.mask_tokens.weight"]
    assert torch.equal(ours["mask_decoder.mask_tokens.weight"], tokens[:3])
    # The cached attention bias was rebuilt from the loaded tables (this is the fixture's first
    # use, before any test calls train() or eval()).
    _, tiny_vit = lite_tools()
    for attn in segmenter.image_encoder.modules():
        if isinstance(attn, tiny_vit.Attention):
            assert torch.equal(attn.ab, attn.attention_biases[:, attn.attention_bias_idxs])
    report = segmenter.load_report
    assert report.unexpected == [] and report.resized == []
    assert len([n for n in report.initialised if ".lora_" in n]) == 40  # 10 attention layers


def test_forward_matches_the_packaged_encoder(segmenter, package_run) -> None:
    """Same embedding as the package (weights, eval mode, identity LoRA at init), then logits."""
    image, _, _ = blob_image()
    captured = {}
    hook = segmenter.image_encoder.register_forward_hook(
        lambda m, i, out: captured.update(embedding=out)
    )
    try:
        with torch.no_grad():
            logits = segmenter.train()(image[None, None])  # train mode: encoder stays in eval
    finally:
        hook.remove()
    assert (segmenter.input_size, segmenter.logits_size) == (256, 256)
    assert logits.shape == (1, 3, 256, 256)
    assert torch.equal(captured["embedding"], package_run["embedding"])


@pytest.mark.parametrize("num_classes", [1, 2, 3])
def test_decoder_shapes_and_batch_independence(segmenter, package_run, num_classes) -> None:
    """The prompt-free decoder on the shared embedding, batch 1 and 3, C = 1..3."""
    decoder = segmenter
    if num_classes != segmenter.num_classes:
        torch.manual_seed(num_classes)
        decoder = PromptFreeSegmenter(
            torch.nn.Identity(),
            segmenter.prompt_encoder,
            build_mask_decoder(num_classes),
            num_classes=num_classes,
            in_channels=3,
            input_size=256,
            logits_size=256,
            name="decoder only",
        )
    embedding = package_run["embedding"]
    batch = torch.cat([embedding, embedding.flip(-1), 0.5 * embedding])
    with torch.no_grad():
        together = decoder.decode(batch)
        alone = torch.cat([decoder.decode(batch[i : i + 1]) for i in range(3)])
    assert together.shape == (3, num_classes + 1, 256, 256)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


def test_encoder_stays_in_eval_mode_with_its_cached_bias(segmenter) -> None:
    _, tiny_vit = lite_tools()
    segmenter.train()
    assert segmenter.mask_decoder.training
    batch_norms = [
        m for m in segmenter.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert batch_norms and not any(m.training for m in batch_norms)
    attentions = [m for m in segmenter.image_encoder.modules() if isinstance(m, tiny_vit.Attention)]
    assert len(attentions) == 10
    for attn in attentions:
        assert not attn.training
        assert torch.equal(attn.ab, attn.attention_biases[:, attn.attention_bias_idxs])


def test_lora_adds_into_per_head_q_and_v_slices(segmenter) -> None:
    attn = segmenter.image_encoder.layers[1].blocks[0].attn  # dim 128, 4 heads of 32
    qkv = attn.qkv
    x = torch.randn(2, 49, 128)
    base = F.linear(x, qkv.weight, qkv.bias)

    def split(y):  # TinyViT's own split of the fused output
        return y.view(2, 49, attn.num_heads, -1).split([attn.key_dim, attn.key_dim, attn.d], dim=3)

    with torch.no_grad():
        assert torch.equal(qkv(x), base)
        for target, changed in ((qkv.lora_q, 0), (qkv.lora_v, 2)):
            saved = target.B.weight.clone()
            target.B.weight.normal_()
            parts = split(qkv(x))
            delta = target(x).view(2, 49, attn.num_heads, -1)  # B A x, head-major channels
            target.B.weight.copy_(saved)
            for i, (new, old) in enumerate(zip(parts, split(base))):
                assert torch.equal(new, old) == (i != changed)
            torch.testing.assert_close(parts[changed] - split(base)[changed], delta)


def test_trainable_parameters_and_round_trip(segmenter) -> None:
    trainable = {n for n, p in segmenter.named_parameters() if p.requires_grad}
    lora = {n for n, _ in segmenter.lora_named_parameters()}
    assert len(lora) == 40 and all(".attn.qkv.lora_" in n for n in lora)
    others = trainable - lora
    assert others and all(n.startswith(("mask_decoder.", "prompt_encoder.")) for n in others)
    source = build_litemedsam_segmenter(num_classes=2, pretrained=False)
    with torch.no_grad():
        for p in source.trainable_parameters():
            p.normal_()
    target = build_litemedsam_segmenter(num_classes=2, pretrained=False)
    target.load_trainable_state_dict(source.trainable_state_dict())
    assert set(target.trainable_state_dict()) == trainable
    for name, value in source.trainable_state_dict().items():
        assert torch.equal(target.trainable_state_dict()[name], value), name
    with pytest.raises(ValueError, match="missing"):
        target.load_trainable_state_dict({})


def test_reduced_input_size_loads_every_packaged_weight_unchanged() -> None:
    """At 128 px the same weights load as they are (TinyViT's parameters depend on its window
    sizes, not on the resolution); the embedding is 32x32 and the logits 128x128."""
    segmenter = build_foundation("litemedsam", num_classes=1, in_channels=1, image_size=128)
    report = segmenter.load_report
    packaged_size = build_foundation("litemedsam", num_classes=1, in_channels=1).load_report
    assert report.resized == [] and report.unexpected == []
    for kind in ("loaded", "partial", "initialised", "skipped"):
        assert getattr(report, kind) == getattr(packaged_size, kind), kind
    package = packaged_model(pretrained=False).image_encoder.state_dict()
    ours = segmenter.image_encoder.state_dict()
    assert {k: v.shape for k, v in package.items()} == {
        k: v.shape for k, v in ours.items() if ".lora_" not in k
    }
    image = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        assert segmenter.image_encoder(image.expand(2, 3, 128, 128)).shape == (2, 256, 32, 32)
        assert segmenter.eval()(image).shape == (2, 2, 128, 128)
    assert (segmenter.input_size, segmenter.logits_size) == (128, 128)


def test_input_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        build_foundation("litemedsam", num_classes=1, in_channels=1, image_size=100)


@pytest.mark.parametrize("image_size, expected", [(None, 256), (128, 128)])
def test_run_config_picks_the_packaged_size_unless_image_size_is_set(image_size, expected) -> None:
    """BUSI's spec asks ViT models for 512 px; LiteMedSAM takes its own 256 instead, and
    ``model.image_size`` overrides both (the reduced CPU study's 128)."""
    from dataloaders.specs import get_spec
    from engine.build import build_students
    from engine.config import load_config

    overrides = ["model.unet_width=4"] + ([f"model.image_size={image_size}"] if image_size else [])
    config = load_config("configs/busi.yaml", overrides)
    spec = get_spec(config.data.dataset)
    assert spec.foundation_size == 512
    _, foundation = build_students(config, spec)
    assert (foundation.input_size, foundation.logits_size) == (expected, expected)
