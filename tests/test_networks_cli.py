"""``python -m networks``: parameter tables, load reports, one-line errors; the registry.

The summaries run ``main`` in-process (the import of torch and SAM costs seconds per
subprocess); the error path runs the real command to check its exit status and stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run_module

from networks import FOUNDATIONS, build_foundation
from networks.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("networks", *args)


def table(stdout: str) -> dict[str, tuple[int, int]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].replace(",", "").isdigit():
            rows[parts[0]] = (int(parts[1].replace(",", "")), int(parts[2].replace(",", "")))
    return rows


def test_tiny_summary(capsys) -> None:
    assert main(["--foundation", "tiny", "--num_classes", "2", "--unet_width", "8"]) == 0
    stdout = capsys.readouterr().out
    rows = table(stdout)
    assert rows["lora"] == (2048, 2048)
    assert rows["encoder"][1] == 0
    parts = ("encoder", "lora", "mask_decoder", "prompt_encoder")
    assert rows["foundation"][0] == sum(rows[p][0] for p in parts)
    assert rows["mask_decoder"][0] == 3_918_019  # C = 2, as the reference's LoRA_Sam
    assert "random initialisation" in stdout


def test_litemedsam_summary_loads_the_packaged_weights(capsys) -> None:
    assert main(["--foundation", "litemedsam", "--num_classes", "2"]) == 0
    stdout = capsys.readouterr().out
    rows = table(stdout)
    assert rows["encoder"] == (5_726_740, 0)
    assert rows["lora"] == (29_696, 29_696)
    assert rows["unet"][0] == 31_036_611
    assert "lite_medsam.pth: 426 tensors unchanged" in stdout  # C = 2: MLPs 0..2
    assert "0 unexpected" in stdout


def test_missing_checkpoint_gives_instructions_without_traceback(tmp_path) -> None:
    result = run_cli("--foundation", "medsam_vit_b", "--checkpoint", str(tmp_path / "none.pth"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    for fragment in ("medsam_vit_b.pth", "bowang-lab/MedSAM", "checkpoints/", "litemedsam"):
        assert fragment in message


def test_registry_errors() -> None:
    expected = {"litemedsam", "medsam_vit_b", "sam_vit_b", "vit_l", "vit_h", "vit_b_random", "tiny"}
    assert set(FOUNDATIONS) == expected
    assert [n for n, f in FOUNDATIONS.items() if f.native_size is not None] == ["litemedsam"]
    with pytest.raises(ValueError, match="unknown foundation model 'vit_x'; expected one of"):
        build_foundation("vit_x", num_classes=1, in_channels=1)
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth") as error:
        build_foundation("sam_vit_b", num_classes=1, in_channels=1, checkpoint="/nonexistent.pth")
    assert "dl.fbaipublicfiles.com/segment_anything" in str(error.value)
    assert "\n" not in str(error.value)


def test_tiny_with_a_checkpoint(tmp_path) -> None:
    import torch

    donor = build_foundation("tiny", num_classes=3, in_channels=1)
    torch.save(
        {k: v for k, v in donor.state_dict().items() if ".lora_" not in k}, tmp_path / "t.pth"
    )
    model = build_foundation(
        "tiny", num_classes=1, in_channels=1, checkpoint=str(tmp_path / "t.pth")
    )
    assert model.load_report is not None and model.load_report.resized == []
    assert torch.equal(model.image_encoder.pos_embed, donor.image_encoder.pos_embed)
