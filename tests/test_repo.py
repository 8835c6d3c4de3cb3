"""The repository's own contracts: README commands, CI entry point, configs and scripts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

from dataloaders.specs import get_spec
from engine.config import config_to_dict, load_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    """The one-line commands of the README's quick start (the ```bash blocks after it)."""
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick_start)


def test_readme_has_the_two_commands() -> None:
    setup, tests = readme_commands()[:2]
    assert setup.startswith("pip install -r requirements.txt") and "configs/demo.yaml" in setup
    assert tests.startswith("pip install -r requirements.txt") and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_names_a_registered_dataset(path: Path) -> None:
    config = load_config(path)
    get_spec(config.data.dataset)
    assert config_to_dict(config)["data"]["dataset"] == config.data.dataset


@pytest.mark.parametrize("path", sorted((REPO / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse(path: Path) -> None:
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_resized_copy_loads_like_the_originals(samples_root: Path, tmp_path: Path) -> None:
    """scripts/resize_dataset.py: a 64-px copy of the BUSI samples decodes to exactly what the
    loader makes of the originals at a 64-px canvas and patch."""
    from dataloaders.datasets import load_samples, scan_split
    from scripts.resize_dataset import main as resize_main

    root = samples_root / "Dataset_BUSI_with_GT"
    assert (
        resize_main(
            ["--dataset", "busi", "--root", str(root), "--out", str(tmp_path), "--size", "64"]
        )
        == 0
    )
    spec = get_spec("busi")
    for split in ("train", "test"):
        original, copy = (scan_split(spec, r, 0, split) for r in (root, tmp_path))
        assert [s.name for s in original] == [s.name for s in copy]
        a, b = (
            load_samples(spec, files, [0] * len(files), canvas_size=64)
            for files in (original, copy)
        )
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
