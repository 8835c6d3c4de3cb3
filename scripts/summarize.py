"""Turn a set of runs into the paper's table layout, as Markdown and CSV.

    python scripts/summarize.py runs/busi/*                       # one row per run and model
    python scripts/summarize.py runs/prostate/* --by_labeled_domain   # Tables 3-5 layout
    python scripts/summarize.py runs/busi/* --out docs/busi_table  # writes .md and .csv
    python scripts/summarize.py runs/busi_study/*/*/* --paired    # method - SupOnly, per seed

Each run contributes its ``test_<checkpoint>.json`` (from ``python test.py --run DIR``) when it
exists, otherwise its latest ``eval/<step>.json`` (marked in the source column when that holds
validation-split results, i.e. the run used ``data.val_fraction``). A given path that is not a run
folder (no ``config.yaml``) or a run without results yet (failed, or not evaluated) is skipped with
a one-line warning on stderr; it is an error (exit 2) when a given path does not exist or when no
path at all holds a run with results.

Default layout (paper Table 6): one row per run and model with the Dice of every test domain
(mean over the dataset's regions), then mean Dice, Jaccard, 95HD and ASD averaged over domains.
The "labeled" column reads ``<labeled domain> n=<lb_num>``, e.g. ``benign n=64``; the domain is
named as in the results (a 1-based ``lb_domain`` number is looked up in the run's test domains,
which follow the dataset spec's order) and written ``d<k>`` when it cannot be resolved.

With ``--by_labeled_domain`` (Tables 3-5): one row per experiment and model, one column per
labeled domain (named as above, in the spec's order) holding the mean Dice over all test domains,
and their average. The experiment of a run is its whole config except:

- the seeds ``train.seed`` and ``data.lb_seed``: runs that differ only by these are replicates,
  and their cell holds the mean over them. When any cell has several, every Markdown cell reads
  ``mean ± std (n=<runs>)``, e.g. ``66.10 ± 1.20 (n=3)`` (sample standard deviation; a cell with
  a single run reads ``66.10 (n=1)``), otherwise it reads the plain value;
- ``data.lb_domain``, which picks the column;
- bookkeeping that does not change what is trained or how it is scored (``RUN_KEYS``: paths,
  device, logging and checkpoint intervals, ``compile``, ``deterministic``, evaluation batch size
  and which models are evaluated).

Runs that differ in anything else (``lb_num``, method or optimiser settings, foundation model,
iterations...) are never merged: they get separate rows, and a "setting" column then names the
values that tell those rows apart (e.g. ``data.lb_num=64`` / ``data.lb_num=129``); it is absent
when there is nothing to tell apart. Two runs with the same experiment and the same seeds are an
error that names both (pass only one of them). The CSV holds the same rows with three columns per
labeled domain: ``labeled <domain>`` (mean), ``labeled <domain> std`` (``-`` when n < 2) and
``labeled <domain> n``; its average column holds the mean only.

With ``--paired``: paired differences against the SupOnly baseline. Every other run is matched
with the SupOnly run of the same seeds, labeled domain and settings outside the ``method``
section (iterations, labels, models, data); each model of the pair gives one row with the
difference in Dice per test domain and in mean Dice (method minus SupOnly, in points), followed
per group (method, model, labeled domain, setting) by a row with the mean ± sample std of the
differences over seeds and how many were above zero. A run without its SupOnly partner is
skipped with a warning. The "source" column says which result file each number comes from
(``--checkpoint last``: no model selection; ``best`` is meaningful only for runs that select on
a validation split, ``data.val_fraction`` > 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
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

Table = tuple[list[str], list[list[str]]]
# Experiment settings of a run as sorted (dotted key, value) pairs; see :func:`experiment_key`.
Key = tuple[tuple[str, Any], ...]


class Run(NamedTuple):
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


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def per_run_rows(runs: list[Run]) -> Table:
    """Paper Table 6 layout: one row per run and model."""
    domains = result_domains(runs)
    header = ["method", "model", "labeled", *[f"{d} Dice" for d in domains]]
    header += ["mean Dice", "Jaccard", "95HD", "ASD", "source"]
    rows = []
    for run in runs:
        labeled = f"{labeled_domain(run)} n={run.config['data']['lb_num']}"
        for model, result in run.results.items():
            mean = result["mean"]["mean"]
            dice = [result["domains"].get(d, {}).get("mean", {}).get("dice") for d in domains]
            rows.append(
                [
                    method_label(run.config),
                    model_label(model, run.config),
                    labeled,
                    *[_fmt(v, 100) for v in dice],
                    _fmt(mean["dice"], 100),
                    _fmt(mean["jaccard"], 100),
                    _fmt(mean["hd95"]),
                    _fmt(mean["asd"]),
                    f"{run.path.name}/{run.source}",
                ]
            )
    return header, rows


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


# (method label, model label, experiment key) -> labeled domain -> the runs and their mean Dice.
Cells = dict[tuple[str, str, Key], dict[str, list[tuple[Run, float]]]]


def group_replicates(runs: list[Run]) -> Cells:
    """Runs per table cell; the runs in a cell differ only by their seeds.

    Raises:
        SummaryError: two runs of the same experiment and labeled domain with the same seeds.
    """
    cells: Cells = defaultdict(lambda: defaultdict(list))
    for run in runs:
        key = experiment_key(run.config)
        for model, result in run.results.items():
            row = (method_label(run.config), model_label(model, run.config), key)
            cell = cells[row][labeled_domain(run)]
            for other, _ in cell:
                if seeds(other.config) == seeds(run.config):
                    raise SummaryError(
                        f"{other.path} and {run.path} are the same experiment with the same "
                        f"seeds ({', '.join(SEED_KEYS)}); pass only one of them"
                    )
            cell.append((run, result["mean"]["mean"]["dice"]))
    return cells


def setting_labels(rows: list[tuple[str, str, Key]]) -> dict[tuple[str, str, Key], str]:
    """Per row, the settings that tell it apart from rows with the same method and model.

    A key that varies within any (method, model) group is shown on every row, so that all rows
    state it. All labels are empty when no two rows share their method and model.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for method, model, key in rows:
        groups[(method, model)].append(dict(key))
    varying: list[str] = []
    for settings in groups.values():
        for name in sorted({n for s in settings for n in s}):
            if name not in varying and len({repr(s.get(name)) for s in settings}) > 1:
                varying.append(name)
    return {row: ", ".join(f"{n}={dict(row[2]).get(n)}" for n in varying) for row in rows}


def _stats(cell: list[tuple[Run, float]]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None below 2 runs) and number of runs of a cell."""
    values = [value for _, value in cell]
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std, len(values)


def _markdown_cell(cell: list[tuple[Run, float]], show_n: bool) -> str:
    mean, std, n = _stats(cell)
    if mean is None or not show_n:
        return _fmt(mean, 100)
    spread = "" if std is None else f" ± {_fmt(std, 100)}"
    return f"{_fmt(mean, 100)}{spread} (n={n})"


def by_labeled_domain_rows(runs: list[Run]) -> tuple[Table, Table]:
    """Paper Tables 3-5 layout as (Markdown table, CSV table): columns are labeled domains,
    values the mean Dice over test domains, averaged over seeds."""
    cells = group_replicates(runs)
    order = result_domains(runs)
    found = {d for per_domain in cells.values() for d in per_domain}
    domains = sorted(found, key=lambda d: (order.index(d) if d in order else len(order), d))
    settings = setting_labels(list(cells))
    show_setting = any(settings.values())
    show_n = any(len(cell) > 1 for per_domain in cells.values() for cell in per_domain.values())
    lead = ["method", "model"] + (["setting"] if show_setting else [])
    md_header = [*lead, *[f"labeled {d}" for d in domains], "average"]
    csv_header = [*lead]
    for d in domains:
        csv_header += [f"labeled {d}", f"labeled {d} std", f"labeled {d} n"]
    md_rows, csv_rows = [], []
    for row, per_domain in cells.items():
        first = [row[0], row[1]] + ([settings[row]] if show_setting else [])
        stats = [_stats(per_domain.get(d, [])) for d in domains]
        means = [mean for mean, _, _ in stats]
        average = None if None in means else statistics.fmean(means)
        cells_md = [_markdown_cell(per_domain.get(d, []), show_n) for d in domains]
        md_rows.append([*first, *cells_md, _fmt(average, 100)])
        cells_csv = [f for m, s, n in stats for f in (_fmt(m, 100), _fmt(s, 100), str(n))]
        csv_rows.append([*first, *cells_csv, _fmt(average, 100)])
    return (md_header, md_rows), ([*csv_header, "average"], csv_rows)


BASELINE = "SupOnly"


def context_key(config: dict[str, Any]) -> Key:
    """The experiment key less the ``method`` section: what a method and its SupOnly baseline
    must share to be compared (data, labels, models, iterations, optimisers)."""
    return tuple((k, v) for k, v in experiment_key(config) if not k.startswith("method."))


def _pair_index(runs: list[Run]) -> dict[tuple[Key, str, tuple[Any, ...]], Run]:
    """SupOnly runs by (context, labeled domain, seeds).

    Raises:
        SummaryError: two SupOnly runs for the same slot.
    """
    index: dict[tuple[Key, str, tuple[Any, ...]], Run] = {}
    for run in runs:
        if method_label(run.config) != BASELINE:
            continue
        slot = (context_key(run.config), labeled_domain(run), seeds(run.config))
        if slot in index:
            raise SummaryError(
                f"{index[slot].path} and {run.path} are both the {BASELINE} run of the same "
                "setting and seeds; pass only one of them"
            )
        index[slot] = run
    return index


def _mean_dice(result: dict[str, Any], domain: str | None = None) -> float | None:
    if domain is None:
        return result["mean"]["mean"]["dice"]
    return result["domains"].get(domain, {}).get("mean", {}).get("dice")


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# (method, model, labeled, setting key) -> per-seed mean-Dice differences.
PairGroups = dict[tuple[str, str, str, Key], list[float]]


def _pair_rows(runs: list[Run], domains: list[str]) -> tuple[list[list[str]], PairGroups]:
    """One row per (run, model) with its SupOnly partner, and the differences per group."""
    index = _pair_index(runs)
    rows: list[list[str]] = []
    groups: PairGroups = defaultdict(list)
    for run in runs:
        method = method_label(run.config)
        if method == BASELINE:
            continue
        labeled = labeled_domain(run)
        base = index.get((context_key(run.config), labeled, seeds(run.config)))
        if base is None:
            print(f"warning: skipped {run.path}: no {BASELINE} run with its seeds and setting",
                  file=sys.stderr)  # fmt: skip
            continue
        for model, result in run.results.items():
            if model not in base.results:
                continue
            partner = base.results[model]
            per_domain = [
                _difference(_mean_dice(result, d), _mean_dice(partner, d)) for d in domains
            ]
            delta = _mean_dice(result) - _mean_dice(partner)
            model_name = model_label(model, run.config)
            groups[(method, model_name, labeled, experiment_key(run.config))].append(delta)
            seed = "/".join(str(s) for s in seeds(run.config) if s is not None)
            rows.append(
                [method, model_name, f"{labeled} n={run.config['data']['lb_num']}", seed,
                 _fmt(_mean_dice(result), 100), _fmt(_mean_dice(partner), 100),
                 *[_fmt(v, 100) for v in per_domain], _fmt(delta, 100),
                 f"{run.path.name}/{run.source} - {base.path.name}/{base.source}"]
            )  # fmt: skip
    return rows, groups


def paired_rows(runs: list[Run]) -> Table:
    """Paired differences against SupOnly (see the module docstring), pairs then group means."""
    domains = result_domains(runs)
    rows, groups = _pair_rows(runs, domains)
    if not rows:
        raise SummaryError(f"no run could be paired with a {BASELINE} run of the same seeds")
    header = ["method", "model", "labeled", "seed", "Dice", f"{BASELINE} Dice"]
    header += [f"Δ {d}" for d in domains] + ["Δ mean Dice", "source"]
    settings = setting_labels([(m, model, key) for m, model, _, key in groups])
    for (method, model, labeled, key), deltas in groups.items():
        std = f" ± {_fmt(statistics.stdev(deltas), 100)}" if len(deltas) > 1 else ""
        wins = sum(d > 0 for d in deltas)
        setting = settings[(method, model, key)]
        rows.append(
            [f"**{method}**" + (f" ({setting})" if setting else ""), model, labeled,
             f"mean of {len(deltas)}", "", "", *[""] * len(domains),
             f"**{_fmt(statistics.fmean(deltas), 100)}{std}**", f"{wins}/{len(deltas)} above 0"]
        )  # fmt: skip
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--checkpoint", default="last", help="which test_<checkpoint>.json to read")
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--by_labeled_domain", action="store_true", help="paper Tables 3-5 layout")
    layout.add_argument("--paired", action="store_true", help="differences against SupOnly")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table (and write OUT.md / OUT.csv); 2 on an error, printed as one line."""
    args = parse_args(argv)
    try:
        runs = collect_runs(args.runs, args.checkpoint)
        if args.by_labeled_domain:
            md_table, csv_table = by_labeled_domain_rows(runs)
        elif args.paired:
            md_table = csv_table = paired_rows(runs)
        else:
            md_table = csv_table = per_run_rows(runs)
    except SummaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = markdown(*md_table)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        with args.out.with_suffix(".csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([csv_table[0], *csv_table[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
