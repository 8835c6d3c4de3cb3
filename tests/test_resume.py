"""Run names, resuming and device choice: what keeps one experiment from overwriting, resuming or
relabelling another, and what a resumed run leaves in TensorBoard."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train_e2e import train

import train as train_cli
from dataloaders.synthetic import generate_synthetic
from engine.build import select_device
from engine.checkpoint import load_checkpoint
from engine.config import ConfigError, load_config
from engine.runs import default_run_name
from engine.trainer import Trainer


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=4, train_per_domain=6, test_per_domain=2, size=64)


def _name(*overrides: str) -> str:
    config = load_config("configs/demo.yaml", list(overrides))
    return default_run_name(config, list(overrides))


def test_run_name_shows_ablation_overrides() -> None:
    base = _name()
    assert base == "synfoc_both_litemedsam_d1_n8_s1337"
    assert _name("method.alpha=self") == base + "_alpha-self"
    assert _name("method.alpha=self", "method.alpha=mutual") == base + "_alpha-mutual"
    assert _name("method.cp_area=[0.1, 0.5]") == base + "_cp_area-0.1-0.5"
    # Already in the name, or not defining the experiment: no suffix.
    assert _name("train.seed=2") == "synfoc_both_litemedsam_d1_n8_s2"
    assert _name("train.eval_interval=10", "eval.teachers=true", "data.root=/x") == base


def test_resume_refuses_another_experiment(data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert train(data_root, out, 2) == 0
    capsys.readouterr()
    assert train(data_root, out, 2, "--auto_resume", "--set", "method.threshold=0.5") == 2
    err = capsys.readouterr().err
    assert "method.threshold 0.95 -> 0.5" in err and len(err.strip().splitlines()) == 1
    assert train_cli.main(["--resume", str(out), "--set", "optim.unet_lr=0.01"]) == 2
    assert "optim.unet_lr" in capsys.readouterr().err
    assert load_config(out / "config.yaml").method.threshold == 0.95  # left untouched


def test_resume_may_extend_the_run(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(data_root, out, 2) == 0
    assert train_cli.main(["--resume", str(out), "--max_iterations", "3", "--no_progress"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    assert "train.max_iterations 2 -> 3" in (out / "train.log").read_text()


def _steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_resumed_run_keeps_the_events_of_its_checkpoint_step(
    data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    """Killed right after the evaluation and checkpoint of step 2, then resumed: TensorBoard
    holds each step once, the step-2 evaluation included."""
    original = Trainer.train_step

    def crash_at_step_2(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(data_root, tmp_path / "run", 4)
    monkeypatch.setattr(Trainer, "train_step", original)
    # Event files are read in name order: events.out.tfevents.<second>.<host>.<pid>.<counter>.
    # A real resume is a new process, seconds later; here both writers share the pid, and within
    # one second a counter of 10 would sort before 9 and put the resumed events first.
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.05)
    assert train_cli.main(["--resume", str(tmp_path / "run"), "--no_progress"]) == 0
    assert _steps(tmp_path / "run", "eval/unet/mean/dice") == [2, 4]
    assert _steps(tmp_path / "run", "train/total") == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["gpu", "cuda:99", "tpu"])
def test_unknown_or_missing_devices_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match=repr(name)):
        select_device(name)


def test_cpu_device_and_auto() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("foundation", "expected"),
    [
        ("tiny", "--foundation tiny"),
        ("sam_vit_b", "--foundation sam_vit_b"),
        ("medsam_vit_b", "--foundation medsam_vit_b --checkpoint weights/medsam.pth"),
    ],
)
def test_scripts_give_the_medsam_checkpoint_to_medsam_only(foundation: str, expected: str) -> None:
    command = "source scripts/common.sh && foundation_args"
    env = {
        "FOUNDATION": foundation,
        "MEDSAM_CHECKPOINT": "weights/medsam.pth",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == expected
