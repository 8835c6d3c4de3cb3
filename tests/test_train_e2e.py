"""End to end on CPU: train.py and test.py on tiny models and tiny synthetic data, through the
same loaders, step, evaluation and checkpoint code a GPU run uses."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_OVERRIDES
from PIL import Image

import test as test_cli
import train as train_cli
from dataloaders.synthetic import generate_synthetic
from engine.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from engine.evaluate_run import prediction_filename
from engine.trainer import Trainer

TINY = [arg for o in TINY_OVERRIDES for arg in ("--set", o)] + ["--device", "cpu", "--no_progress"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=3, train_per_domain=6, test_per_domain=2, size=64)


def train(data_root: Path, out: Path, iterations: int, *extra: str) -> int:
    args = ["--config", "configs/demo.yaml", "--root", str(data_root), "--out", str(out)]
    args += ["--max_iterations", str(iterations), "--set", "train.eval_interval=2"]
    args += ["--set", "train.log_interval=1", "--set", "train.checkpoint_interval=1"]
    return train_cli.main(args + TINY + list(extra))


@pytest.fixture(scope="module")
def run_dir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert train(data_root, out, 4) == 0
    return out


def test_train_writes_every_contract_file(run_dir: Path) -> None:
    assert (run_dir / "config.yaml").is_file()
    assert "step 4/4" in (run_dir / "train.log").read_text()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run_dir / "eval").glob("*.json")) == ["2.json", "4.json"]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert last["step"] == 4 and best["step"] in (2, 4)
    assert set(last["models"]) == {"unet", "unet_teacher", "foundation", "foundation_teacher"}
    # The foundation model is stored as its trainable tensors only (LoRA, decoder, prompt).
    foundation = last["models"]["foundation"]
    assert any(".lora_" in k for k in foundation)
    assert not any(k.startswith("image_encoder.") and ".lora_" not in k for k in foundation)
    assert last["config"]["model"]["foundation"] == "tiny"


def test_eval_json_holds_both_students_per_domain(run_dir: Path) -> None:
    results = json.loads((run_dir / "eval" / "4.json").read_text())["results"]
    assert set(results) == {"unet", "foundation"}
    assert set(results["unet"]["domains"]) == {"siteA", "siteB", "siteC"}
    dice = results["foundation"]["mean"]["mean"]["dice"]
    assert 0.0 <= dice <= 1.0


def test_test_cli_reproduces_the_final_evaluation(run_dir: Path, capsys) -> None:
    assert test_cli.main(["--run", str(run_dir), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "siteA" in printed and "mean" in printed
    tested = json.loads((run_dir / "test_last.json").read_text())["results"]
    final = json.loads((run_dir / "eval" / "4.json").read_text())["results"]
    for model in ("unet", "foundation"):
        assert tested[model]["mean"]["mean"]["dice"] == pytest.approx(
            final[model]["mean"]["mean"]["dice"], abs=1e-6
        )
    rows = (run_dir / "test_last.csv").read_text().splitlines()
    assert rows[0].startswith("model") and len(rows) > 6


def test_test_cli_teachers_and_single_model(run_dir: Path, data_root: Path) -> None:
    args = ["--run", str(run_dir), "--device", "cpu", "--model", "unet", "--teachers"]
    assert test_cli.main(args + ["--checkpoint", "best", "--save_predictions"]) == 0
    results = json.loads((run_dir / "test_best.json").read_text())["results"]
    assert set(results) == {"unet", "unet_teacher"}
    # One PNG per test image, named like the image inside its domain folder (no "siteB_" prefix),
    # at patch resolution (data.patch_size=32), gray values class x (255 // 2) for 2 classes.
    predictions = run_dir / "predictions_best"
    assert sorted(p.name for p in predictions.iterdir()) == ["unet", "unet_teacher"]
    for site in ("siteA", "siteB", "siteC"):
        written = sorted(p.name for p in (predictions / "unet" / site).iterdir())
        assert written == sorted(p.name for p in (data_root / site / "test" / "image").iterdir())
        for path in (predictions / "unet" / site).iterdir():
            with Image.open(path) as image:
                assert image.mode == "L" and image.size == (32, 32)
                assert set(np.unique(np.asarray(image)).tolist()) <= {0, 127, 254}


def test_prediction_filename_drops_the_domain_folder() -> None:
    assert prediction_filename("benign/benign (5)", "benign") == "benign (5).png"
    assert prediction_filename("BIDMC/00_00", "BIDMC") == "00_00.png"
    assert prediction_filename("17", "siteA") == "17.png"  # index fallback


def test_test_cli_accepts_a_checkpoint_file_as_run(run_dir: Path, capsys, caplog) -> None:
    """--run DIR/checkpoints/best.pt is --run DIR --checkpoint best; --no_progress: no bars."""
    best = run_dir / "checkpoints" / "best.pt"
    (run_dir / "test_best.json").unlink(missing_ok=True)
    with caplog.at_level(logging.INFO):
        args = ["--run", str(best), "--device", "cpu", "--model", "unet", "--no_progress"]
        assert test_cli.main(args) == 0
    assert json.loads((run_dir / "test_best.json").read_text())["checkpoint"] == str(best)
    err = capsys.readouterr().err
    assert "eval siteA" not in err and "test siteA" not in err and "it/s" not in err
    # After the build's "randomly initialised" line, the log says the trained weights were loaded.
    step = load_checkpoint(best)["step"]
    models = "unet, unet_teacher, foundation, foundation_teacher"
    loaded = f"loaded trained weights of {models} from {best} (step {step})"
    assert loaded in caplog.text
    assert caplog.text.index("randomly initialised") < caplog.text.index(loaded)


def test_test_cli_shows_progress_bars_by_default(run_dir: Path, capsys) -> None:
    # best, not last: test_last.json of both students stays for test_summarize_* below.
    args = ["--run", str(run_dir), "--checkpoint", "best", "--device", "cpu", "--model", "unet"]
    assert test_cli.main(args) == 0
    err = capsys.readouterr().err
    assert "test siteA" in err and "eval siteA" in err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_test_cli_bad_run_or_checkpoint_is_a_one_line_error(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    assert test_cli.main(["--run", best, "--checkpoint", "last"]) == 2
    assert "use --run DIR --checkpoint" in one_line_error(capsys)
    assert test_cli.main(["--run", str(tmp_path / "checkpoints" / "last.pt")]) == 2
    assert "does not exist; use --run DIR --checkpoint" in one_line_error(capsys)
    assert test_cli.main(["--run", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert f"{tmp_path} is not a run folder (no config.yaml, no checkpoints/)" in err
    assert "checkpoints/last.pt" in err  # what a run folder holds
    assert test_cli.main(["--run", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert test_cli.main(["--run", str(run_dir), "--checkpoint", "bset"]) == 2
    assert "expected last | best | a path to a .pt file" in one_line_error(capsys)


def test_resolve_checkpoint_lists_the_checkpoints_a_run_holds(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("train: {seed: 1}\n")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="holds no .pt files"):
        resolve_checkpoint(tmp_path, "last")
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert resolve_checkpoint(tmp_path, "last") == tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match=r"best\.pt does not exist; .* holds last\.pt$"):
        resolve_checkpoint(tmp_path, "best")
    path = tmp_path / "checkpoints" / "last.pt"
    assert resolve_checkpoint(tmp_path / "elsewhere", str(path)) == path


def test_resume_continues_the_same_run(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """A run killed after step 3 and resumed ends with the same weights as an uninterrupted one."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train(data_root, straight, 5) == 0

    original = Trainer.train_step

    def crash_at_step_3(self):
        if self.step == 3:
            raise KeyboardInterrupt  # as if the job were killed mid-run
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(data_root, killed, 5)
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", original)
    assert train_cli.main(["--resume", str(killed), "--no_progress"]) == 0
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 5
    for model in a["models"]:
        for name, tensor in a["models"][model].items():
            assert torch.equal(tensor, b["models"][model][name]), f"{model}.{name} differs"


def test_existing_run_needs_resume(run_dir: Path, data_root: Path, capsys) -> None:
    assert train(data_root, run_dir, 4) == 2
    assert "--resume" in capsys.readouterr().err


def test_auto_resume_of_a_finished_run_only_reevaluates(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(data_root, out, 2) == 0
    before = load_checkpoint(out / "checkpoints" / "last.pt")["models"]["unet"]
    assert train(data_root, out, 2, "--auto_resume") == 0
    after = load_checkpoint(out / "checkpoints" / "last.pt")
    assert after["step"] == 2
    assert all(torch.equal(before[k], v) for k, v in after["models"]["unet"].items())


def test_resume_without_checkpoint_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.yaml").write_text("train: {seed: 1}\n")
    assert train_cli.main(["--resume", str(tmp_path)]) == 2
    assert "last.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.compile_mode=fast", "train.compile_mode"),
        ("train.compile_scope=loss", "train.compile_scope"),
        ("model.vit_attention=flash", "flash"),
    ],
)
def test_unknown_speed_options_are_one_line_errors(
    data_root: Path, tmp_path: Path, capsys, override: str, named: str
) -> None:
    assert train(data_root, tmp_path / "run", 1, "--set", override) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and named in last, last
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize(
    ("overrides", "evaluated"),
    [
        (["method.supervised_only=true", "method.consistency=none"], {"unet", "foundation"}),
        (["method.students=unet", "method.consistency=none"], {"unet"}),
        (["method.students=foundation", "method.consistency=none"], {"foundation"}),
        (["method.alpha=cps", "method.consistency=cr"], {"unet", "foundation"}),
    ],
    ids=["suponly", "unet-only", "foundation-only", "cps-cr"],
)
def test_baselines_train_and_evaluate(
    data_root: Path, tmp_path: Path, overrides, evaluated
) -> None:
    sets = [arg for override in overrides for arg in ("--set", override)]
    assert train(data_root, tmp_path / "run", 2, *sets) == 0
    results = json.loads((tmp_path / "run" / "eval" / "2.json").read_text())["results"]
    assert set(results) == evaluated


def test_validation_split_replaces_the_test_split_during_training(
    data_root: Path, tmp_path: Path
) -> None:
    """With data.val_fraction, eval/ and best.pt see held-out train files; test.py the test set."""
    out = tmp_path / "run"
    assert train(data_root, out, 2, "--set", "data.val_fraction=0.5") == 0
    record = json.loads((out / "eval" / "2.json").read_text())
    assert record["split"] == "val"
    # 6 train files per site, ceil(0.5 * 6) = 3 held out; the labeled site keeps 6 - 4 = 2.
    counts = {d: v["n"] for d, v in record["results"]["unet"]["domains"].items()}
    assert counts == {"siteA": 2, "siteB": 3, "siteC": 3}
    assert "evaluation on the val split" in (out / "train.log").read_text()
    from scripts import summarize

    assert summarize.main([str(out), "--out", str(tmp_path / "val_table")]) == 0
    assert "eval/2.json (val split)" in (tmp_path / "val_table.md").read_text()
    assert test_cli.main(["--run", str(out), "--device", "cpu"]) == 0
    tested = json.loads((out / "test_last.json").read_text())["results"]["unet"]["domains"]
    assert {d: v["n"] for d, v in tested.items()} == {"siteA": 2, "siteB": 2, "siteC": 2}


def test_real_busi_files_train_and_evaluate(busi_root: Path, tmp_path: Path) -> None:
    """A few steps on a handful of real BUSI images (the real-data path stays covered)."""
    root = tmp_path / "busi"
    for domain, count in (("benign", 10), ("malignant", 5)):
        (root / domain).mkdir(parents=True)
        for i in range(1, count + 1):
            for path in (busi_root / domain).glob(f"{domain} ({i})*.png"):
                shutil.copy(path, root / domain / path.name)
    out = tmp_path / "run"
    args = ["--config", "configs/busi.yaml", "--root", str(root), "--out", str(out)]
    args += ["--max_iterations", "2", "--lb_num", "4", "--set", "train.eval_interval=2"]
    assert train_cli.main(args + TINY) == 0
    results = json.loads((out / "eval" / "2.json").read_text())["results"]
    assert set(results["foundation"]["domains"]) == {"benign", "malignant"}
    assert results["unet"]["domains"]["benign"]["n"] == 2  # int(0.2 * 10) test images


def test_summarize_builds_the_paper_table(run_dir: Path, tmp_path: Path, capsys) -> None:
    from scripts import summarize

    out = tmp_path / "table"
    assert summarize.main([str(run_dir), "--out", str(out)]) == 0
    table = (out.with_suffix(".md")).read_text()
    assert "siteA Dice" in table and "SynFoC" in table and "U-Net" in table
    assert "| siteA n=4 |" in table  # labeled domain and count
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert len(rows) == 3  # header + one row per student
    assert summarize.main([str(run_dir), "--by_labeled_domain"]) == 0
    assert "labeled siteA" in capsys.readouterr().out
