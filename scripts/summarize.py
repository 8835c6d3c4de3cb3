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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.summary_runs import SummaryError, collect_runs  # noqa: E402
from scripts.summary_tables import (  # noqa: E402
    by_labeled_domain_rows,
    markdown,
    paired_rows,
    per_run_rows,
)


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
