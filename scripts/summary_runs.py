"""The runs that ``scripts/summarize.py`` tabulates: reading a run folder's config and its test or
eval results, the labels of its method, models and labeled domain, and the keys that say which
runs are replicates of one experiment (seeds apart) or share a setting with a SupOnly baseline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import yaml

DEFAULTS = {"alpha": "smc", "consistency": "cdcr", "copy_paste": True}
# Replicate seeds: runs differing only by these are averaged in --by_labeled_domain.
SEED_KEYS = ("train.seed", "data.lb_seed")
# Settings that change neither what is trained nor how it is scored.
RUN_KEYS = (
    "data.root",
    "train.out",
    "train.name",
    "train.device",
    "train.log_interval",
    "train.checkpoint_interval",
    "train.compile",
    "train.deterministic",
    "eval.batch_size",
    "eval.models",
    "eval.teachers",
)

# Experiment settings of a run as sorted (dotted key, value) pairs; see :func:`experiment_key`.
Key = tuple[tuple[str, Any], ...]


class Run(NamedTuple):
    """One run folder: its config, its results per model, and the file they come from."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    source: str


class NoResults(FileNotFoundError):
    """A path to skip: not a run folder, or a run without results yet."""


class SummaryError(ValueError):
    """The given runs cannot make a table; the message is one line naming the culprits."""


def method_label(config: dict[str, Any]) -> str:
    """SupOnly, Base-<model>, or SynFoC with its non-default ablation switches."""
    method = config["method"]
    if method["supervised_only"]:
        return "SupOnly"
    if method["students"] != "both":
        return f"Base-{method['students']}"
    changed = [f"{k}={method[k]}" for k, v in DEFAULTS.items() if method[k] != v]
    return "SynFoC" + (f" [{', '.join(changed)}]" if changed else "")


def model_label(model: str, config: dict[str, Any]) -> str:
    """``U-Net`` or the foundation model's name, with the suffix of e.g. ``_teacher``."""
    if model.startswith("unet"):
        return "U-Net" + model[len("unet") :]
    return config["model"]["foundation"] + model[len("foundation") :]


def load_run(run_dir: Path, checkpoint: str) -> Run:
    """The config and results of one run folder.

    Raises:
        NoResults: ``run_dir`` has no ``config.yaml``, or neither test nor eval results.
    """
    if not (run_dir / "config.yaml").is_file():
        raise NoResults("not a run folder (no config.yaml)")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    test_file = run_dir / f"test_{checkpoint}.json"
    if test_file.is_file():
        return Run(run_dir, config, json.loads(test_file.read_text())["results"], test_file.name)
    evals = sorted((run_dir / "eval").glob("*.json"), key=lambda p: int(p.stem))
    if not evals:
        raise NoResults(f"no test_{checkpoint}.json and no eval/<step>.json")
    latest = json.loads(evals[-1].read_text())
    split = latest.get("split", "test")  # runs with data.val_fraction > 0 evaluate on "val"
    source = f"eval/{evals[-1].name}" + ("" if split == "test" else f" ({split} split)")
    return Run(run_dir, config, latest["results"], source)


def collect_runs(paths: list[Path], checkpoint: str) -> list[Run]:
    """Every given run with results; the others are skipped with a warning on stderr.

    Raises:
        SummaryError: a path does not exist, or no path holds a run with results.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SummaryError(f"no such file or folder: {', '.join(missing)}")
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path, checkpoint))
        except NoResults as why:
            print(f"warning: skipped {path}: {why}", file=sys.stderr)
    if not runs:
        raise SummaryError(f"none of the {len(paths)} given paths holds a run with results")
    return runs


def result_domains(runs: list[Run]) -> list[str]:
    """Test domains of all runs, in the order the results list them (the spec's order)."""
    domains: list[str] = []
    for run in runs:
        for result in run.results.values():
            domains += [d for d in result["domains"] if d not in domains]
    return domains


def labeled_domain(run: Run) -> str:
    """Name of the run's labeled domain: looked up in its result domains, else ``d<k>``."""
    value = str(run.config["data"]["lb_domain"])
    names = result_domains([run])
    if value.isdigit():
        k = int(value)
        return names[k - 1] if 1 <= k <= len(names) else f"d{k}"
    return {n.lower(): n for n in names}.get(value.lower(), value)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted key: hashable value} (lists become tuples)."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = tuple(value) if isinstance(value, list) else value
    return flat


def experiment_key(config: dict[str, Any]) -> Key:
    """What defines the experiment: the config less seeds, labeled domain and ``RUN_KEYS``."""
    left_out = {*SEED_KEYS, *RUN_KEYS, "data.lb_domain"}
    flat = _flatten(config)
    return tuple((k, flat[k]) for k in sorted(flat) if k not in left_out)


def seeds(config: dict[str, Any]) -> tuple[Any, ...]:
    """The replicate seeds of a run (``SEED_KEYS``)."""
    flat = _flatten(config)
    return tuple(flat.get(k) for k in SEED_KEYS)


def context_key(config: dict[str, Any]) -> Key:
    """The experiment key less the ``method`` section: what a method and its SupOnly baseline
    must share to be compared (data, labels, models, iterations, optimisers)."""
    return tuple((k, v) for k, v in experiment_key(config) if not k.startswith("method."))
