"""scripts/busi_table6.sh: which runs it makes and what it tests, with a stand-in interpreter
that records every call (the runs themselves are train.py/test.py, tested elsewhere)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers import REPO

# Records "<script> <args>" per call; answers the script's float check with the real Python.
RECORDER = """#!/usr/bin/env bash
if [[ "$1" == -c ]]; then exec python3 "$@"; fi
echo "$*" >> "$CALLS"
"""


def start_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script on DATA_ROOT "data", 900 iterations, with the recorder as its interpreter."""
    recorder = tmp_path / "python"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    environment = {**os.environ, "PYTHON": str(recorder), "CALLS": str(tmp_path / "calls"), **env}
    return subprocess.run(
        ["bash", "scripts/busi_table6.sh", "data", "900", str(tmp_path / "out"), *args],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def run_script(tmp_path: Path, *args: str, **env: str) -> list[list[str]]:
    """The recorded calls of a successful run of the script."""
    result = start_script(tmp_path, *args, **env)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in (tmp_path / "calls").read_text().splitlines()]


def test_every_seed_and_domain_gets_suponly_and_synfoc_then_the_paired_table(tmp_path):
    calls = run_script(tmp_path, "--lb_num", "129", SEEDS="1 2", LB_DOMAINS="benign malignant")
    trains = [c for c in calls if c[0] == "train.py"]
    outs = [c[c.index("--out") + 1] for c in trains]
    assert [Path(o).relative_to(tmp_path / "out").as_posix() for o in outs] == [
        f"{d}/seed{s}/{m}" for d in ("benign", "malignant") for s in (1, 2)
        for m in ("suponly", "synfoc")
    ]  # fmt: skip
    for call in trains:
        # The extra arguments come last (they override the defaults), seeds and domains as asked.
        assert call[-2:] == ["--lb_num", "129"]
        assert call[call.index("--seed") + 1] in ("1", "2")
        assert ("method.supervised_only=true" in call) == call[call.index("--out") + 1].endswith(
            "suponly"
        )
        assert "train.eval_interval=900" in call and "data.val_fraction" not in " ".join(call)
    tests = [c for c in calls if c[0] == "test.py"]
    assert len(tests) == 8 and all(c[c.index("--checkpoint") + 1] == "last" for c in tests)
    summaries = [c for c in calls if c[0] == "scripts/summarize.py"]
    assert [next((a for a in c if a.startswith("--") and a not in ("--checkpoint", "--out")),
                 None) for c in summaries] == [None, "--by_labeled_domain", "--paired"]  # fmt: skip


def test_validation_split_tests_best_too_and_runramp_is_the_old_schedule(tmp_path):
    calls = run_script(tmp_path, METHODS="suponly synfoc_runramp", SEEDS="7", VAL_FRACTION="0.2")
    trains = [c for c in calls if c[0] == "train.py"]
    assert all("data.val_fraction=0.2" in c and "train.eval_interval=180" in c for c in trains)
    old = next(c for c in trains if c[c.index("--out") + 1].endswith("synfoc_runramp"))
    assert "method.ramp_iterations=900" in old and "method.ramp_stairs=0" in old
    checkpoints = [c[c.index("--checkpoint") + 1] for c in calls if c[0] == "test.py"]
    assert checkpoints == ["last", "best", "last", "best"]


def test_an_unknown_method_stops_before_any_run(tmp_path):
    result = start_script(tmp_path, METHODS="suponly fixmatch")
    assert result.returncode == 2 and "unknown method 'fixmatch'" in result.stderr
    assert not (tmp_path / "calls").exists()


def test_test_last_0_skips_the_repeated_test_but_not_the_tables_or_a_validation_run(tmp_path):
    """Without a validation split the run's final evaluation is the test of last.pt, so
    TEST_LAST=0 calls no test.py and the tables still come (from eval/<step>.json); with one,
    last.pt and best.pt are still tested on the test split."""
    calls = run_script(tmp_path, SEEDS="1", TEST_LAST="0")
    assert [c[0] for c in calls].count("train.py") == 2
    assert not [c for c in calls if c[0] == "test.py"]
    summaries = [c for c in calls if c[0] == "scripts/summarize.py"]
    assert len(summaries) == 3 and all(c[c.index("--checkpoint") + 1] == "last" for c in summaries)
    (tmp_path / "calls").unlink()
    calls = run_script(tmp_path, SEEDS="1", TEST_LAST="0", VAL_FRACTION="0.2")
    assert [c[c.index("--checkpoint") + 1] for c in calls if c[0] == "test.py"] == [
        "last", "best", "last", "best"
    ]  # fmt: skip
