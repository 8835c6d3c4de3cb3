"""The ViT SAM/MedSAM segmenter: prompt-free decoding, LoRA, fast attention, checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention

from networks.sam import (
    SDPAttention,
    build_sam_segmenter,
    load_sam_checkpoint,
    resize_pos_embed,
    resize_rel_pos,
    set_vit_attention,
)
from networks.segmenter import build_mask_decoder


def tiny(num_classes=1, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_sam_segmenter("tiny", num_classes=num_classes, **kwargs)


def randomise_(model, names=("rel_pos", "pos_embed", "lora_q.B", "lora_v.B")):
    """Give zero-initialised tensors values, so that they matter in comparisons."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(part in name for part in names):
                p.normal_(0, 0.5)


@pytest.mark.parametrize("num_classes", [1, 2, 3])
def test_output_shape_and_batch_independence(num_classes) -> None:
    model = tiny(num_classes).eval()
    assert (model.input_size, model.logits_size, model.num_classes) == (64, 16, num_classes)
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        logits = model(images)
        alone = torch.cat([model(images[i : i + 1]) for i in range(3)])
    assert logits.shape == (3, num_classes + 1, 16, 16)
    assert alone.shape == (3, num_classes + 1, 16, 16)
    # Same values up to float rounding (BLAS blocks a batch of 3 differently from 1).
    torch.testing.assert_close(logits, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0], logits[1])


def test_grayscale_input_is_repeated_to_three_channels() -> None:
    gray = tiny(in_channels=1).eval()
    rgb = tiny(in_channels=3).eval()
    rgb.load_state_dict(gray.state_dict())
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(images), rgb(images.repeat(1, 3, 1, 1)))


def test_rejects_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 64, 64\)"):
        tiny()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam_segmenter("tiny", num_classes=1, image_size=72)


def test_lora_at_init_equals_the_upstream_encoder() -> None:
    """Zero-initialised B: bit-identical to the upstream encoder with plain qkv Linears."""
    model = tiny(fast_attention=False).eval()
    randomise_(model, names=("rel_pos", "pos_embed"))
    upstream = build_sam_segmenter("tiny", num_classes=1, fast_attention=False)
    for block in upstream.image_encoder.blocks:  # undo the LoRA wrapping: plain upstream Linear
        qkv = block.attn.qkv
        block.attn.qkv = torch.nn.Linear(qkv.in_features, qkv.out_features)
    base = {k: v for k, v in model.image_encoder.state_dict().items() if ".lora_" not in k}
    upstream.image_encoder.load_state_dict(base)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.image_encoder(images), upstream.image_encoder(images))


def test_trainable_parameters_are_lora_decoder_and_prompt_encoder() -> None:
    model = tiny()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {
        f"image_encoder.blocks.{i}.attn.qkv.lora_{t}.{m}.weight"
        for i in range(2)
        for t in "qv"
        for m in "AB"
    }
    decoder = {f"mask_decoder.{n}" for n, _ in model.mask_decoder.named_parameters()}
    prompt = {f"prompt_encoder.{n}" for n, _ in model.prompt_encoder.named_parameters()}
    assert trainable == lora | decoder | prompt
    assert set(model.trainable_state_dict()) == trainable
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" not in trainable
    counts = model.parameter_counts()
    assert counts["lora"] == (2 * 2 * 2 * 4 * 64,) * 2  # blocks x {q,v} x {A,B} x r x dim
    assert counts["encoder"][1] == 0


def test_one_step_changes_the_output_not_the_frozen_encoder() -> None:
    model = tiny(num_classes=2)
    frozen = {
        n: t.clone()
        for n, t in model.state_dict().items()
        if not n.startswith(("mask_decoder.", "prompt_encoder.")) and ".lora_" not in n
    }
    images, target = torch.rand(2, 1, 64, 64), torch.randint(0, 3, (2, 16, 16))
    with torch.no_grad():
        before = model(images)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    F.cross_entropy(model(images), target).backward()
    optimizer.step()
    with torch.no_grad():
        after = model(images)
    assert (after - before).abs().max() > 1e-3
    state = model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in frozen.items())
    assert model.image_encoder.blocks[0].attn.qkv.lora_q.B.weight.abs().sum() > 0


def test_train_mode_keeps_the_encoder_in_eval_mode() -> None:
    model = tiny().train()
    assert model.training and model.mask_decoder.training and model.prompt_encoder.training
    lora = {id(m) for b in model.image_encoder.blocks for m in b.attn.qkv.modules()}
    for module in model.image_encoder.modules():
        assert module.training == (id(module) in lora)
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("mode", ["mask", "folded"])
def test_sdpa_attention_matches_upstream_module(mode: str) -> None:
    torch.manual_seed(0)
    for size, shape in [(3, (8, 3, 3, 64)), (4, (2, 4, 4, 64)), (4, (1, 6, 6, 64))]:
        upstream = Attention(64, num_heads=2, use_rel_pos=True, input_size=(size, size))
        with torch.no_grad():
            upstream.rel_pos_h.normal_()
            upstream.rel_pos_w.normal_()
        fast = SDPAttention(upstream)  # shares the parameters
        fast.mode = mode
        x = torch.randn(shape, requires_grad=True)
        expected = upstream(x)
        (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
        out = fast(x)  # the last shape (6x6 on 4x4 tables) takes the interpolating fallback
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, grad_expected, rtol=1e-4, atol=1e-4)


def test_folded_attention_gives_the_rel_pos_parameters_the_upstream_gradient() -> None:
    torch.manual_seed(1)
    upstream = Attention(64, num_heads=2, use_rel_pos=True, input_size=(5, 5))
    with torch.no_grad():
        upstream.rel_pos_h.normal_()
        upstream.rel_pos_w.normal_()
    fast = SDPAttention(upstream)
    fast.mode = "folded"
    x = torch.randn(3, 5, 5, 64)
    params = [upstream.rel_pos_h, upstream.rel_pos_w, upstream.qkv.weight]
    expected = torch.autograd.grad(upstream(x).square().sum(), params)
    got = torch.autograd.grad(fast(x).square().sum(), params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_folded_keys_select_their_own_row_and_column() -> None:
    """q' . k' adds rel_h[kh] + rel_w[kw] for key (kh, kw): check the one-hot layout."""
    upstream = Attention(16, num_heads=1, use_rel_pos=True, input_size=(2, 3))
    fast = SDPAttention(upstream)
    assert fast.key_h.tolist() == [[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]
    assert fast.key_w.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 2


def test_buffers_follow_the_replaced_module_device() -> None:
    """A layer built from an upstream module already on another device (the meta device stands
    in for the GPU here) keeps its index and one-hot buffers there too."""
    upstream = Attention(16, num_heads=1, use_rel_pos=True, input_size=(2, 3)).to("meta")
    fast = SDPAttention(upstream)
    assert {name: b.device.type for name, b in fast.named_buffers()} == dict.fromkeys(
        ("index_h", "index_w", "key_h", "key_w"), "meta"
    )


def test_set_vit_attention_switches_every_layer_and_rejects_unknown_modes() -> None:
    model = tiny(num_classes=2).eval()
    randomise_(model)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        masked = model(images)
        assert set_vit_attention(model, "folded") == 2
        assert {b.attn.mode for b in model.image_encoder.blocks} == {"folded"}
        folded = model(images)
    torch.testing.assert_close(folded, masked, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="vit_attention"):
        set_vit_attention(model, "flash")


def test_fast_attention_model_matches_upstream_attention_model() -> None:
    fast = tiny(num_classes=2).eval()
    randomise_(fast)
    slow = tiny(num_classes=2, fast_attention=False).eval()
    slow.load_state_dict(fast.state_dict())
    assert isinstance(fast.image_encoder.blocks[1].attn, SDPAttention)
    assert type(slow.image_encoder.blocks[1].attn) is Attention
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(images), slow(images), rtol=1e-5, atol=1e-5)


def test_trainable_state_round_trip_is_exact() -> None:
    source = tiny(num_classes=2, seed=1)
    randomise_(source, names=("lora", "mask_decoder", "no_mask_embed"))
    buffer = io.BytesIO()
    torch.save(source.trainable_state_dict(), buffer)
    buffer.seek(0)
    target = tiny(num_classes=2, seed=2)
    # Same frozen tensors (encoder, positional-encoding buffer), as when both models come from
    # one pretrained checkpoint; every trainable tensor still differs.
    trainable = set(source.trainable_state_dict())
    frozen = {k: v for k, v in source.state_dict().items() if k not in trainable}
    target.load_state_dict(frozen, strict=False)
    assert not torch.equal(
        target.mask_decoder.mask_tokens.weight, source.mask_decoder.mask_tokens.weight
    )
    state = torch.load(buffer, weights_only=True)
    target.load_trainable_state_dict(state)
    for name, value in source.trainable_state_dict().items():
        assert torch.equal(target.trainable_state_dict()[name], value), name
    images = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(target.eval()(images), source.eval()(images))
    with pytest.raises(ValueError, match="missing mask_decoder.mask_tokens.weight"):
        target.load_trainable_state_dict(
            {k: v for k, v in state.items() if k != "mask_decoder.mask_tokens.weight"}
        )
    with pytest.raises(ValueError, match="unknown extra.weight"):
        target.load_trainable_state_dict({**state, "extra.weight": torch.zeros(1)})
    bad = {**state, "mask_decoder.mask_tokens.weight": torch.zeros(4, 256)}
    with pytest.raises(ValueError, match=r"has shape \(4, 256\), expected \(3, 256\)"):
        target.load_trainable_state_dict(bad)


def test_resizing_hand_computed() -> None:
    ramp = torch.arange(7.0)[:, None].repeat(1, 2)  # table rows 0..6
    expected = torch.tensor([2 / 3, 3.0, 16 / 3])[:, None].repeat(1, 2)
    torch.testing.assert_close(resize_rel_pos(ramp, torch.Size([3, 2])), expected)
    # The reference resizes with bilinear over a 1x1xLxC view, leaving C alone: the same.
    table = torch.randn(127, 64)
    reference = F.interpolate(table[None, None], (63, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_rel_pos(table, torch.Size([63, 64])), reference[0, 0])
    pos = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None].repeat(1, 1, 1, 3)
    torch.testing.assert_close(
        resize_pos_embed(pos, torch.Size([1, 1, 1, 3])), torch.full((1, 1, 1, 3), 2.5)
    )


def _synthetic_checkpoint(tmp_path, image_size=128):
    """A 'SAM-like' tiny checkpoint at another input size with SAM's 4 mask tokens."""
    donor = tiny(num_classes=3, seed=5, image_size=image_size)
    randomise_(donor, names=("rel_pos", "pos_embed"))
    state = {k: v for k, v in donor.state_dict().items() if ".lora_" not in k}
    path = tmp_path / "tiny_sam.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("num_classes", [1, 3, 4])
def test_checkpoint_adaptation_on_tiny(tmp_path, num_classes) -> None:
    path, state = _synthetic_checkpoint(tmp_path)
    model = tiny(num_classes=num_classes, seed=6)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_sam_checkpoint(model, path)
    loaded = model.state_dict()
    assert report.unexpected == []
    # Block 1 is the global block; block 0's 3x3-window tables (5 rows) fit unchanged.
    assert report.resized == [
        "image_encoder.pos_embed",
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.blocks.1.attn.rel_pos_w",
    ]
    expected_pos = resize_pos_embed(state["image_encoder.pos_embed"], torch.Size([1, 4, 4, 64]))
    torch.testing.assert_close(loaded["image_encoder.pos_embed"], expected_pos)
    assert loaded["image_encoder.blocks.1.attn.rel_pos_h"].shape == (7, 32)
    for key in ("image_encoder.blocks.0.attn.rel_pos_h", "image_encoder.blocks.1.attn.qkv.weight"):
        assert torch.equal(loaded[key], state[key])
    tokens = loaded["mask_decoder.mask_tokens.weight"]
    rows = min(num_classes + 1, 4)
    assert torch.equal(tokens[:rows], state["mask_decoder.mask_tokens.weight"][:rows])
    assert torch.equal(tokens[rows:], fresh["mask_decoder.mask_tokens.weight"][rows:])
    for i in range(num_classes + 1):
        key = f"mask_decoder.output_hypernetworks_mlps.{i}.layers.0.weight"
        assert torch.equal(loaded[key], state[key] if i < 4 else fresh[key])
    iou = "mask_decoder.iou_prediction_head.layers.2.weight"
    assert torch.equal(loaded[iou], state[iou] if num_classes == 3 else fresh[iou])
    lora = [k for k in report.initialised if ".lora_" in k]
    assert len(lora) == 8
    assert all(torch.equal(loaded[k], fresh[k]) for k in lora)
    skipped_mlps = {k.split(".")[2] for k in report.skipped if "hypernetworks" in k}
    assert skipped_mlps == {str(i) for i in range(num_classes + 1, 4)}


def test_wrong_checkpoints_raise_clear_errors(tmp_path) -> None:
    model = tiny()
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"resnet\.pth is not a SAM-style checkpoint"):
        load_sam_checkpoint(model, foreign)
    deeper = tiny(seed=3)
    state = {k: v for k, v in deeper.state_dict().items() if ".lora_" not in k}
    state["image_encoder.blocks.2.norm1.weight"] = torch.ones(64)
    torch.save(state, tmp_path / "deeper.pth")
    with pytest.raises(ValueError, match="deeper.pth does not fit .*blocks.2.norm1.weight"):
        load_sam_checkpoint(model, tmp_path / "deeper.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth: cannot be read as a PyTorch state dict"):
        load_sam_checkpoint(model, tmp_path / "notes.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        load_sam_checkpoint(model, tmp_path / "missing.pth")


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """The real ViT-B key set at 1024 px: upstream ``sam_model_registry['vit_b']()``."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    state = sam_model_registry["vit_b"]().state_dict()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_1024.pth"
    torch.save(state, path)
    return path, {k: state[k] for k in ("image_encoder.blocks.0.attn.rel_pos_h",)}


def test_vit_b_checkpoint_at_1024_loads_into_512(vit_b_checkpoint) -> None:
    path, sample = vit_b_checkpoint
    model = build_sam_segmenter("vit_b", num_classes=1)
    # The counts of the reference's LoRA_Sam (ViT-B at 512, one class).
    counts = model.parameter_counts()
    assert counts["total"] == (91_210_222, 3_931_374)
    assert counts["lora"][0] == 147_456
    assert counts["mask_decoder"][0] == 3_777_698
    assert counts["prompt_encoder"][0] == 6_220
    report = load_sam_checkpoint(model, path)
    assert report.unexpected == []
    globals_ = [f"image_encoder.blocks.{i}.attn.rel_pos_{a}" for i in (2, 5, 8, 11) for a in "hw"]
    assert report.resized == ["image_encoder.pos_embed", *globals_]
    assert model.image_encoder.pos_embed.shape == (1, 32, 32, 768)
    assert model.image_encoder.blocks[2].attn.rel_pos_h.shape == (63, 64)
    window = model.image_encoder.blocks[0].attn.rel_pos_h
    assert torch.equal(window, sample["image_encoder.blocks.0.attn.rel_pos_h"])
    assert report.partial == ["mask_decoder.mask_tokens.weight (rows 0..1 of the checkpoint's 4)"]
    iou = [
        "mask_decoder.iou_prediction_head.layers.2.weight",
        "mask_decoder.iou_prediction_head.layers.2.bias",
    ]
    assert sorted(report.initialised) == sorted([n for n, _ in model.lora_named_parameters()] + iou)
    assert len(report.initialised) == 48 + 2
    assert len(report.skipped) == 2 * 6 + 2  # hypernetwork MLPs 2 and 3, the IoU head's last layer
    assert len(report.loaded) + len(report.resized) + len(report.partial) + 50 == len(
        model.state_dict()
    )
    # A checkpoint of another architecture names the file and the tensor.
    with pytest.raises(
        ValueError, match=r"sam_vit_b_1024.pth does not fit tiny.*\(768, 3, 16, 16\)"
    ):
        load_sam_checkpoint(tiny(), path)


@pytest.mark.parametrize(("num_classes", "expected"), [(2, 3_918_019), (3, 4_058_340)])
def test_decoder_sizes_match_the_reference(num_classes, expected) -> None:
    assert sum(p.numel() for p in build_mask_decoder(num_classes).parameters()) == expected


def test_decoder_positional_encoding_stays_fp32_under_autocast(monkeypatch) -> None:
    # sin/cos of arguments up to tens of radians: in bf16 the encoding would be off by ~0.1.
    model = tiny()
    with torch.no_grad():
        model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(20.0)
    seen = {}
    decode = model.mask_decoder.predict_masks

    def capture(**kwargs):
        seen["pe"] = kwargs["image_pe"]
        return decode(**kwargs)

    monkeypatch.setattr(model.mask_decoder, "predict_masks", capture)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(1, 1, 64, 64))
    assert seen["pe"].dtype == torch.float32
    torch.testing.assert_close(seen["pe"], model.prompt_encoder.get_dense_pe(), rtol=0, atol=0)
