"""The longest BUSI schedule (iterations) whose SupOnly and SynFoC runs fit a time budget.

    python scripts/busi_schedule.py BENCH_JSON --minutes 6      # prints e.g. 4500

Reads the ``busi`` records that ``scripts/bench.py --json`` wrote on the same machine (one with
the default SynFoC config, one with ``method.supervised_only=true``), and solves
``start-up + iterations * (ms SupOnly + ms SynFoC) <= budget`` with their back-to-back times.
Used by ``scripts/gpu_checks.sh --busi MINUTES`` so that a short time on a GPU machine yields
a finished table with one schedule for every method, rather than runs cut off half way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Per run: interpreter and CUDA start-up, decoding, model loading, the final evaluation, test.py.
STARTUP_SECONDS = 60.0
# Headroom for logging read-backs, the histogram and pseudo-label diagnostics, clock jitter.
SAFETY = 0.9


def busi_times(records: list[dict]) -> tuple[float, float]:
    """(SupOnly, SynFoC) back-to-back ms per iteration from eager ``busi`` bench records."""
    times: dict[bool, float] = {}
    for record in records:
        if record["bench"] != "busi" or record["compile"]:
            continue
        times["method.supervised_only=true" in record["overrides"]] = record["ms_back_to_back"]
    if set(times) != {True, False}:
        raise SystemExit(
            "busi_schedule: need an eager busi bench record with and one without "
            "--set method.supervised_only=true"
        )
    return times[True], times[False]


def schedule(ms_suponly: float, ms_synfoc: float, minutes: float, runs: int = 2) -> int:
    """Iterations, a multiple of 100 (at least 100), for one SupOnly and one SynFoC run."""
    seconds = (minutes * 60 - runs * STARTUP_SECONDS) * SAFETY
    iterations = int(seconds * 1000 / (ms_suponly + ms_synfoc)) // 100 * 100
    return max(iterations, 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench_json", type=Path)
    parser.add_argument("--minutes", type=float, required=True, help="wall time for both runs")
    args = parser.parse_args(argv)
    ms_suponly, ms_synfoc = busi_times(json.loads(args.bench_json.read_text()))
    print(schedule(ms_suponly, ms_synfoc, args.minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
