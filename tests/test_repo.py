"""The repository's own contracts: README commands, CI entry point, configs and scripts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dataloaders.specs import get_spec
from utils.config import config_to_dict, load_config

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
