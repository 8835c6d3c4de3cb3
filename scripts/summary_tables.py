"""The tables of ``scripts/summarize.py``: one row per run and model (Table 6), labeled domains as
columns with mean ± std over seeds (Tables 3-5), paired differences against SupOnly, and the
Markdown they print as.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from typing import Any

from scripts.summary_runs import (
    SEED_KEYS,
    Key,
    Run,
    SummaryError,
    context_key,
    experiment_key,
    labeled_domain,
    method_label,
    model_label,
    result_domains,
    seeds,
)

Table = tuple[list[str], list[list[str]]]


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
    """Paired differences against SupOnly (see ``scripts/summarize.py``), pairs then group means."""
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
