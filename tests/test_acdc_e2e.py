"""ACDC end to end on CPU: train.py on the real SSL4MIS-layout sample (tiny models, a few
iterations; SupOnly and SynFoC) and test.py's per-volume, per-class report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import test as test_cli
import train as train_cli

# configs/acdc.yaml with 3 labeled patients, shrunk for two CPU cores: a 64-px tiny ViT, a
# 4-channel U-Net at 32 px, batch 2+2.
SMOKE = [
    "model.foundation=tiny",
    "model.image_size=64",
    "model.unet_width=4",
    "data.patch_size=32",
    "data.labeled_bs=2",
    "data.unlabeled_bs=2",
    "train.eval_interval=3",
    "train.log_interval=1",
]


def _train(root: Path, out: Path, *extra: str) -> int:
    args = ["--config", "configs/acdc.yaml", "--root", str(root), "--out", str(out)]
    args += ["--lb_num", "3", "--max_iterations", "3", "--device", "cpu", "--no_progress"]
    for override in [*SMOKE, *extra]:
        args += ["--set", override]
    return train_cli.main(args)


@pytest.mark.parametrize("method", ["suponly", "synfoc"])
def test_acdc_trains_and_tests_per_volume(acdc_root: Path, tmp_path: Path, method, capsys) -> None:
    extra = (
        ["method.supervised_only=true", "method.consistency=none"] if method == "suponly" else []
    )
    run = tmp_path / method
    assert _train(acdc_root, run, *extra) == 0
    evaluation = json.loads((run / "eval" / "3.json").read_text())
    assert evaluation["split"] == "val"  # best.pt is chosen on val.list, never on test.list
    assert set(evaluation["results"]["unet"]["domains"]["ACDC"]["volumes"]) == {
        "ACDC/patient028_frame01",
        "ACDC/patient028_frame02",
    }
    capsys.readouterr()
    assert test_cli.main(["--run", str(run), "--device", "cpu", "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "per volume, mean over 3 volumes" in printed and "HD95 (vox)" in printed
    tested = json.loads((run / "test_last.json").read_text())["results"]
    for model in ("unet", "foundation"):
        domain = tested[model]["domains"]["ACDC"]
        assert domain["n"] == 3 and len(domain["volumes"]) == 3
        for region in ("RV", "MYO", "LV"):
            assert 0.0 <= domain["regions"][region]["dice"] <= 1.0
