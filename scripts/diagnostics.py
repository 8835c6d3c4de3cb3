"""Print a run's pseudo-label diagnostics over training, from its TensorBoard events.

    python scripts/diagnostics.py runs/busi/<name>                # about 12 rows over the run
    python scripts/diagnostics.py runs/busi/<name> --rows 40 --csv diag.csv
    python scripts/diagnostics.py runs/busi/<name> --since 300        # plus the mean from step 300

The first thing to look at when SynFoC does not beat its SupOnly baseline: one row per logged
step (thinned to ``--rows``; every value is a mean over the logging interval up to that step),
with λ(t), the SMC weights (α = Φself · Φmut, batch means), the
share of confident unlabeled pixels (before the paste) and of pixels with an unsupervised loss
(after it), the Dice of each teacher's pseudo-labels and of their ensemble against the unlabeled
ground truth (mean over the dataset's regions; the loop computes it, the method never sees it),
the ensemble's Dice on each domain's unlabeled images (``ens_<domain>``: pooled over the images of
that domain in the logging interval; ``-`` where none was drawn), and the students' supervised
and unsupervised losses. Columns a run does not log (a SupOnly run
has no teachers) are left out. ``--since STEP`` adds one row: the mean of every logged value at
steps >= STEP, to compare runs over the same late part of training.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

# (column, TensorBoard tag or tag prefix averaged over its regions)
COLUMNS = (
    ("lambda", "train/lambda"),
    ("alpha", "train/smc/alpha"),
    ("phi_self", "train/smc/phi_self"),
    ("phi_mutual", "train/smc/phi_mutual"),
    ("confident", "train/pseudo/confident_ratio"),
    ("mask", "train/pseudo/mask_ratio"),
    ("pl_dice_unet", "diag/pseudo_dice/unet/"),
    ("pl_dice_found", "diag/pseudo_dice/foundation/"),
    ("pl_dice_ens", "diag/pseudo_dice/ensemble/"),
    ("sup_unet", "train/sup/unet"),
    ("sup_found", "train/sup/foundation"),
    ("unsup_unet", "train/unsup/unet"),
    ("unsup_found", "train/unsup/foundation"),
)


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in ``run_dir/tb`` (the last value per step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tb"
    if not tb.is_dir():
        raise FileNotFoundError(f"{run_dir} has no tb/ folder; is it a run folder of train.py?")
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def column_values(scalars: dict[str, dict[int, float]], source: str) -> dict[int, float]:
    """{step: value} of a tag, or the per-step mean over the tags under a prefix ending in /."""
    if not source.endswith("/"):
        return scalars.get(source, {})
    series = [values for tag, values in scalars.items() if tag.startswith(source)]
    steps = set().union(*series) if series else set()
    return {
        s: sum(v[s] for v in series) / len(series) for s in steps if all(s in v for v in series)
    }


# Per-domain Dice of the ensemble's pseudo-labels: one column per domain, after pl_dice_ens.
BY_DOMAIN = "diag/pseudo_dice_by_domain/ensemble/"


def domain_columns(scalars: dict[str, dict[int, float]]) -> list[tuple[str, str]]:
    """(column, tag prefix) per domain the run logged under ``BY_DOMAIN``, in tag order."""
    domains = dict.fromkeys(
        t[len(BY_DOMAIN) :].split("/")[0] for t in scalars if t.startswith(BY_DOMAIN)
    )
    return [(f"ens_{domain}", f"{BY_DOMAIN}{domain}/") for domain in domains]


def logged_columns(scalars: dict[str, dict[int, float]]) -> list[tuple[str, dict[int, float]]]:
    """(column name, {step: value}) of every column of COLUMNS, and of the per-domain ensemble
    Dice, that the run logged."""
    at = [name for name, _ in COLUMNS].index("pl_dice_ens") + 1
    sources = [*COLUMNS[:at], *domain_columns(scalars), *COLUMNS[at:]]
    columns = [(name, column_values(scalars, source)) for name, source in sources]
    columns = [(name, values) for name, values in columns if values]
    if not columns:
        raise ValueError("no training scalars logged yet")
    return columns


def diagnostics_table(
    scalars: dict[str, dict[int, float]], rows: int
) -> tuple[list[str], list[list[str]]]:
    """(header, rows): about ``rows`` logged steps spread over the run, the last one included."""
    columns = logged_columns(scalars)
    steps = sorted(set().union(*(values for _, values in columns)))
    stride = max(1, -(-len(steps) // rows))  # ceil
    chosen = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
    table = [
        [str(step), *(f"{v[step]:.4g}" if step in v else "-" for _, v in columns)]
        for step in chosen
    ]
    return ["step", *(name for name, _ in columns)], table


def mean_since(scalars: dict[str, dict[int, float]], since: int) -> list[str]:
    """A table row: per column, the mean of the values logged at steps >= ``since``.

    Each logged value is itself a mean over its logging interval, so this is the mean over the
    training steps from about ``since`` on. The step cell reads ``>=STEP`` plus the number of
    logged steps averaged; a column with nothing logged in that range shows ``-``.
    """
    columns = logged_columns(scalars)
    steps = sorted(s for s in set().union(*(values for _, values in columns)) if s >= since)
    if not steps:
        raise ValueError(f"nothing logged at step {since} or later")
    cells = []
    for _, values in columns:
        late = [values[s] for s in steps if s in values]
        cells.append(f"{sum(late) / len(late):.4g}" if late else "-")
    return [f">={since}(n={len(steps)})", *cells]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="run folder written by train.py")
    parser.add_argument("--rows", type=int, default=12, help="about this many steps (default 12)")
    parser.add_argument("--csv", help="also write every logged step to this CSV file")
    parser.add_argument(
        "--since", type=int, help="add a row with the mean of the logged values from this step on"
    )
    args = parser.parse_args(argv)
    try:
        scalars = read_scalars(Path(args.run))
        header, rows = diagnostics_table(scalars, args.rows)
        if args.since is not None:
            rows.append(mean_since(scalars, args.since))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {args.run}: {error}", file=sys.stderr)
        return 2
    print(format_table(header, rows))
    if args.csv:
        header, every = diagnostics_table(scalars, rows=sys.maxsize)
        with open(args.csv, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *every])
    return 0


if __name__ == "__main__":
    sys.exit(main())
