"""A sweep file read into its grid points: one ``train.py`` call and run folder per point.

The file format is described in ``scripts/sweep.py``. Everything here is checked before anything is
submitted: unknown keys, grid keys that are not config keys, methods that are not in
:data:`METHODS`, executors without their required fields, points that share a run folder, and
configs that train.py would refuse.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dataloaders.specs import get_spec
from engine.config import Config, ConfigError, load_config
from engine.runs import check_config, default_run_name

# Methods by name: the --set overrides that make them (as in scripts/busi_table6.sh and the
# README's ablation table).
METHODS: dict[str, tuple[str, ...]] = {
    "synfoc": (),
    "suponly": ("method.supervised_only=true", "method.consistency=none"),
    "base_unet": ("method.students=unet", "method.consistency=none"),
    "base_foundation": ("method.students=foundation", "method.consistency=none"),
}
# Grid keys that are not config keys: the base config file and the method.
SPECIAL_GRID_KEYS = ("config", "method")
TOP_LEVEL_KEYS = ("config", "out", "set", "grid", "executor")

# Executor fields: the required ones, then the optional ones with their defaults.
EXECUTOR_FIELDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "slurm": (
        ("partition", "time"),
        {
            "gpus": 0,
            "cpus": 1,
            "mem_gb": None,
            "account": None,
            "sbatch": {},
            "requeues": 10,
            "signal_delay_s": 90,
        },
    ),
    "local": (("workers",), {"device": "cpu", "time": 4320}),
    "debug": ((), {}),
}


class SweepError(ValueError):
    """A sweep file that cannot run; the message is one line naming the file and key."""


@dataclass(frozen=True)
class Point:
    """One grid point: the train.py call that trains it and where its run folder is."""

    config: str  # base config file
    overrides: tuple[str, ...]  # section.key=value, given to train.py as --set
    label: str  # the grid values of this point, e.g. "data.lb_domain=benign method=suponly"
    run_dir: Path
    max_iterations: int

    def argv(self) -> list[str]:
        """train.py's arguments: resume the folder if it holds a run, else start it."""
        sets = [arg for override in self.overrides for arg in ("--set", override)]
        out = ["--out", str(self.run_dir)]
        return ["--config", self.config, *sets, *out, "--auto_resume", "--no_progress"]

    @property
    def key(self) -> str:
        """The run folder relative to the sweep's output folder (``<dataset>/<name>``)."""
        return f"{self.run_dir.parent.name}/{self.run_dir.name}"


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: its points, output folder and executor settings."""

    path: Path
    out: Path
    points: tuple[Point, ...]
    executor: dict[str, Any]  # "kind" plus every field of that kind, defaults filled in

    @property
    def state_dir(self) -> Path:
        """Where the sweep keeps its job records and submitit's files."""
        return self.out / ".sweep"


def yaml_value(value: Any) -> str:
    """A value as the text of a ``--set`` override, read back by YAML as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("\n...").strip()


def _config_keys() -> set[str]:
    return {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(section.default_factory())
    }


def _as_list(path: Path, key: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise SweepError(f"{path}: grid key {key!r}: expected a non-empty list of values")
    return values


def check_grid(path: Path, grid: Any) -> dict[str, list[Any]]:
    """The grid as ``{key: values}``; every key a config key or one of SPECIAL_GRID_KEYS."""
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: grid: expected a mapping of key: [values]")
    known = _config_keys()
    for key, values in grid.items():
        if key not in known and key not in SPECIAL_GRID_KEYS:
            raise SweepError(
                f"{path}: unknown grid key {key!r}; expected a config key (section.key, as in "
                f"configs/base.yaml) or one of {', '.join(SPECIAL_GRID_KEYS)}"
            )
        _as_list(path, key, values)
    unknown = [m for m in grid.get("method", []) if m not in METHODS]
    if unknown:
        raise SweepError(
            f"{path}: grid key 'method': unknown {unknown[0]!r}; expected one of "
            f"{', '.join(METHODS)}"
        )
    return grid


def check_executor(path: Path, executor: Any) -> dict[str, Any]:
    """The executor section with its defaults filled in, or a SweepError naming what is wrong."""
    if not isinstance(executor, dict) or executor.get("kind") not in EXECUTOR_FIELDS:
        raise SweepError(f"{path}: executor.kind: expected one of {', '.join(EXECUTOR_FIELDS)}")
    kind = executor["kind"]
    required, optional = EXECUTOR_FIELDS[kind]
    missing = [name for name in required if executor.get(name) is None]
    if missing:
        raise SweepError(
            f"{path}: executor {kind} needs {', '.join(missing)} (required: {', '.join(required)})"
        )
    unknown = sorted(set(executor) - {"kind", *required, *optional})
    if unknown:
        fields = ", ".join([*required, *optional]) or "none"
        raise SweepError(
            f"{path}: executor {kind}: unknown field {unknown[0]!r}; expected: {fields}"
        )
    checked = {**optional, **executor}
    _check_executor_types(path, checked)
    return checked


# Executor fields that must be whole numbers (minutes, counts), and their least value.
_COUNT_FIELDS = {"time": 1, "gpus": 0, "cpus": 1, "requeues": 0, "signal_delay_s": 0, "workers": 1}


def _check_executor_types(path: Path, executor: dict[str, Any]) -> None:
    """Counts are whole numbers, ``device`` cpu or gpu, ``sbatch`` a mapping of flags."""
    kind = executor["kind"]
    for name, least in _COUNT_FIELDS.items():
        value = executor.get(name)
        if name in executor and (type(value) is not int or value < least):
            raise SweepError(
                f"{path}: executor {kind}: {name}: expected a whole number >= {least}, "
                f"got {value!r}"
            )
    if executor.get("device", "cpu") not in ("cpu", "gpu"):
        raise SweepError(f"{path}: executor {kind}: device: expected cpu or gpu")
    if not isinstance(executor.get("sbatch", {}), dict):
        raise SweepError(f"{path}: executor {kind}: sbatch: expected a mapping of flag: value")


def _grid_overrides(grid: dict[str, list[Any]], values: tuple[Any, ...]) -> list[str]:
    """The overrides of one grid point (the method expanded to its switches)."""
    overrides: list[str] = []
    for key, value in zip(grid, values):
        if key == "method":
            overrides += METHODS[value]
        elif key != "config":
            overrides.append(f"{key}={yaml_value(value)}")
    return overrides


def make_point(path: Path, config_file: str, overrides: list[str], label: str, out: Path) -> Point:
    """A point's run folder, named as train.py names a run (``<out>/<dataset>/<name>``)."""
    try:
        config = load_config(config_file, overrides)
        check_config(config)
    except ConfigError as error:
        raise SweepError(f"{path}: point {label}: {error}") from None
    name = config.train.name or default_run_name(config, overrides)
    iterations = config.train.max_iterations or get_spec(config.data.dataset).max_iterations
    run_dir = out / config.data.dataset / name
    return Point(config_file, tuple(overrides), label, run_dir, iterations)


def plan_points(path: Path, raw: dict[str, Any], out: Path, extra: list[str]) -> list[Point]:
    """Every point of the grid, in the grid's order; run folders must be distinct."""
    grid = check_grid(path, raw.get("grid") or {})
    base = [f"{k}={yaml_value(v)}" for k, v in (raw.get("set") or {}).items()] + extra
    configs = grid.get("config") or [raw.get("config")]
    if None in configs:
        raise SweepError(f"{path}: config: expected the base config file (or a grid 'config')")
    points, seen = [], {}
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        label = " ".join(f"{k}={v}" for k, v in settings.items()) or "(no grid)"
        config_file = str(settings.get("config", configs[0]))
        point = make_point(path, config_file, base + _grid_overrides(grid, values), label, out)
        if point.run_dir in seen:
            raise SweepError(
                f"{path}: points {seen[point.run_dir]!r} and {label!r} share the run folder "
                f"{point.run_dir}; vary a key that names the run, or set train.name"
            )
        seen[point.run_dir] = label
        points.append(point)
    return points


def executor_overrides(path: Path, texts: list[str]) -> dict[str, Any]:
    """``field=value`` texts (values read as YAML) as a mapping over the executor section."""
    overrides = {}
    for text in texts:
        field, sep, value = text.partition("=")
        if not sep or not field:
            raise SweepError(f"{path}: --executor {text!r}: expected FIELD=VALUE")
        overrides[field] = yaml.safe_load(value) if value else None
    return overrides


def load_sweep(path: str | Path, extra: list[str] = (), executor: list[str] = ()) -> Sweep:
    """Read and check a sweep file; ``extra`` are ``section.key=value`` overrides for every point,
    ``executor`` ``field=value`` overrides of its executor section (``kind=local``).

    Raises:
        SweepError: anything that would make a point fail before it trains (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SweepError(
            f"{path}: unknown key {unknown[0]!r}; expected {', '.join(TOP_LEVEL_KEYS)}"
        )
    if executor:
        fields = raw.get("executor") if isinstance(raw.get("executor"), dict) else {}
        overrides = executor_overrides(path, list(executor))
        if "kind" in overrides:  # another kind: the file's fields are for its own kind
            fields = {}
        raw["executor"] = {**fields, **overrides}
    checked = check_executor(path, raw.get("executor"))
    out = Path(raw.get("out") or Path("runs") / "sweeps" / path.stem).resolve()
    points = plan_points(path, raw, out, list(extra))
    return Sweep(path, out, tuple(points), checked)


def check_writable(sweep: Sweep) -> None:
    """Create the sweep's folder and write a probe file there, so that a folder where runs
    cannot be written fails now, in one line, and not inside every job."""
    probe = sweep.state_dir / "write-probe"
    try:
        sweep.state_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise SweepError(
            f"{sweep.path}: run folder {sweep.out} is not writable ({error.strerror})"
        ) from None
