"""scripts/summarize.py on small fake run folders (config.yaml + test_last.json or eval/)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import summarize

DOMAINS = ("benign", "malignant")


def result(dice: float) -> dict[str, Any]:
    """One model's results in the layout of evaluation.evaluate, every domain at ``dice``."""
    metrics = {"dice": dice, "jaccard": dice - 0.1, "hd95": 5.0, "asd": 1.0}
    return {
        "domains": {d: {"n": 2, "mean": dict(metrics)} for d in DOMAINS},
        "mean": {"n": 4, "mean": dict(metrics)},
    }


def fake_run(
    root: Path,
    name: str,
    dice: float | None = 0.5,
    *,
    lb_domain: str = "1",
    lb_num: int = 64,
    seed: int = 1337,
    method: dict[str, Any] | None = None,
) -> Path:
    """A run folder; ``dice=None`` makes a run without results (failed or not evaluated)."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    config = {
        "data": {"dataset": "busi", "root": f"/data/{name}", "lb_domain": lb_domain},
        "model": {"foundation": "litemedsam"},
        "method": {
            "students": "both",
            "supervised_only": False,
            "alpha": "smc",
            "consistency": "cdcr",
            "copy_paste": True,
            "threshold": 0.95,
            **(method or {}),
        },
        "train": {"seed": seed, "out": str(run), "max_iterations": 100},
    }
    config["data"].update(lb_num=lb_num, lb_seed=None)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if dice is not None:
        results = {"unet": result(dice), "foundation": result(dice + 0.1)}
        (run / "test_last.json").write_text(json.dumps({"step": 100, "results": results}))
    return run


def summarize_ok(capsys, *args: Any) -> tuple[list[str], str]:
    """Run the script expecting success: (Markdown lines printed, stderr)."""
    assert summarize.main([str(a) for a in args]) == 0
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_runs_without_results_are_skipped_with_a_warning(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path, "good", 0.6)
    fake_run(tmp_path, "failed", None)
    (tmp_path / "notes").mkdir()
    lines, err = summarize_ok(capsys, *sorted(tmp_path.iterdir()))
    assert len(lines) == 4  # header, rule, one row per model of the good run
    assert all("good/test_last.json" in line for line in lines[2:])
    assert err.splitlines() == [
        f"warning: skipped {tmp_path / 'failed'}: no test_last.json and no eval/<step>.json",
        f"warning: skipped {tmp_path / 'notes'}: not a run folder (no config.yaml)",
    ]


def test_no_run_with_results_is_an_error(tmp_path: Path, capsys) -> None:
    failed = fake_run(tmp_path, "failed", None)
    assert summarize.main([str(failed)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"warning: skipped {failed}: no test_last.json and no eval/<step>.json",
        "error: none of the 1 given paths holds a run with results",
    ]


def test_a_path_that_does_not_exist_is_an_error(tmp_path: Path, capsys) -> None:
    good = fake_run(tmp_path, "good")
    typo = tmp_path / "goood"
    assert summarize.main([str(good), str(typo), "--out", str(tmp_path / "table")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: no such file or folder: {typo}\n"
    assert not (tmp_path / "table.md").exists()


def test_labeled_column_names_domain_and_count(tmp_path: Path, capsys) -> None:
    runs = [
        fake_run(tmp_path, "a", lb_domain="1", lb_num=64),
        fake_run(tmp_path, "b", lb_domain="Malignant", lb_num=129),
        fake_run(tmp_path, "c", lb_domain="5", lb_num=8),  # not a domain of the results
    ]
    lines, _ = summarize_ok(capsys, *runs, "--out", tmp_path / "table")
    assert lines[0].startswith("| method | model | labeled | benign Dice | malignant Dice |")
    assert lines[2].startswith("| SynFoC | U-Net | benign n=64 | 50.00 | 50.00 | 50.00 | 40.00 |")
    rows = read_csv(tmp_path / "table.csv")
    assert [r["labeled"] for r in rows] == ["benign n=64"] * 2 + ["malignant n=129"] * 2 + [
        "d5 n=8"
    ] * 2
    assert rows[1]["model"] == "litemedsam" and rows[1]["mean Dice"] == "60.00"


def test_single_runs_keep_the_plain_tables_3_to_5_layout(tmp_path: Path, capsys) -> None:
    runs = [
        fake_run(tmp_path, "lb1", 0.6, lb_domain="1"),
        fake_run(tmp_path, "lb2", 0.7, lb_domain="2"),
        fake_run(tmp_path, "sup", 0.4, method={"supervised_only": True}),
    ]
    lines, _ = summarize_ok(capsys, *runs, "--by_labeled_domain")
    assert lines == [
        "| method | model | labeled benign | labeled malignant | average |",
        "|---|---|---|---|---|",
        "| SynFoC | U-Net | 60.00 | 70.00 | 65.00 |",
        "| SynFoC | litemedsam | 70.00 | 80.00 | 75.00 |",
        "| SupOnly | U-Net | 40.00 | - | - |",
        "| SupOnly | litemedsam | 50.00 | - | - |",
    ]


def test_seeds_are_averaged_with_std_and_count(tmp_path: Path, capsys) -> None:
    runs = [fake_run(tmp_path, f"s{seed}", d, seed=seed) for seed, d in ((1, 0.6), (2, 0.62))]
    runs += [fake_run(tmp_path, "s3", 0.64, seed=3)]
    runs += [fake_run(tmp_path, "m1", 0.5, lb_domain="malignant", seed=1)]
    out = tmp_path / "table"
    lines, _ = summarize_ok(capsys, *runs, "--by_labeled_domain", "--out", out)
    assert lines[0] == "| method | model | labeled benign | labeled malignant | average |"
    assert lines[2] == "| SynFoC | U-Net | 62.00 ± 2.00 (n=3) | 50.00 (n=1) | 56.00 |"
    assert lines[3] == "| SynFoC | litemedsam | 72.00 ± 2.00 (n=3) | 60.00 (n=1) | 66.00 |"
    assert len(lines) == 4
    assert out.with_suffix(".md").read_text() == "\n".join(lines) + "\n"
    rows = read_csv(out.with_suffix(".csv"))
    assert list(rows[0]) == [
        "method",
        "model",
        "labeled benign",
        "labeled benign std",
        "labeled benign n",
        "labeled malignant",
        "labeled malignant std",
        "labeled malignant n",
        "average",
    ]
    assert list(rows[0].values()) == ["SynFoC", "U-Net", "62.00", "2.00", "3"] + [
        "50.00",
        "-",
        "1",
        "56.00",
    ]


def test_runs_of_different_experiments_get_separate_rows(tmp_path: Path, capsys) -> None:
    runs = [fake_run(tmp_path, f"n64_s{s}", 0.6 + s / 100, seed=s) for s in (1, 3)]
    runs += [fake_run(tmp_path, "n129", 0.8, lb_num=129)]
    runs += [fake_run(tmp_path, "tau", 0.3, lb_num=129, method={"threshold": 0.9})]
    out = tmp_path / "table"
    lines, _ = summarize_ok(capsys, *runs, "--by_labeled_domain", "--out", out)
    assert lines[0] == "| method | model | setting | labeled benign | average |"
    unet = [line for line in lines if "| U-Net |" in line]
    assert unet == [
        "| SynFoC | U-Net | data.lb_num=64, method.threshold=0.95 | 62.00 ± 1.41 (n=2) | 62.00 |",
        "| SynFoC | U-Net | data.lb_num=129, method.threshold=0.95 | 80.00 (n=1) | 80.00 |",
        "| SynFoC | U-Net | data.lb_num=129, method.threshold=0.9 | 30.00 (n=1) | 30.00 |",
    ]
    rows = read_csv(out.with_suffix(".csv"))
    assert [r["setting"] for r in rows[::2]] == [line.split(" | ")[2] for line in unet]
    assert [r["labeled benign n"] for r in rows] == ["2", "2", "1", "1", "1", "1"]


def test_same_experiment_and_seed_twice_is_an_error(tmp_path: Path, capsys) -> None:
    first, copy = fake_run(tmp_path, "first", 0.6), fake_run(tmp_path, "copy", 0.6)
    assert summarize.main([str(first), str(copy), "--by_labeled_domain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(first) in err and str(copy) in err and "same seeds" in err


@pytest.mark.parametrize("value", ["1", "benign", "BENIGN"])
def test_labeled_domain_forms_share_one_column(tmp_path: Path, capsys, value: str) -> None:
    runs = [fake_run(tmp_path, "a", 0.6, seed=1), fake_run(tmp_path, "b", 0.8, lb_domain=value)]
    lines, _ = summarize_ok(capsys, *runs, "--by_labeled_domain")
    assert lines[0] == "| method | model | labeled benign | average |"
    assert lines[2] == "| SynFoC | U-Net | 70.00 ± 14.14 (n=2) | 70.00 |"


SUPONLY = {"supervised_only": True, "consistency": "none"}


def test_paired_differences_per_seed_and_their_mean(tmp_path: Path, capsys) -> None:
    # SynFoC - SupOnly per seed: U-Net +10, -5, +20 points (mean +8.33, std 12.58), foundation
    # the same (fake_run gives it dice + 0.1 in both runs).
    for seed, base, ours in ((1, 0.40, 0.50), (2, 0.50, 0.45), (3, 0.30, 0.50)):
        fake_run(tmp_path, f"suponly{seed}", base, seed=seed, method=SUPONLY)
        fake_run(tmp_path, f"synfoc{seed}", ours, seed=seed)
    runs = sorted(tmp_path.iterdir())
    summarize_ok(capsys, *runs, "--paired", "--out", tmp_path / "p")
    rows = read_csv(tmp_path / "p.csv")
    unet = [r for r in rows if r["model"] == "U-Net"]
    assert [r["Δ mean Dice"] for r in unet[:3]] == ["10.00", "-5.00", "20.00"]
    assert [r["Δ benign"] for r in unet[:3]] == ["10.00", "-5.00", "20.00"]
    assert unet[0]["Dice"] == "50.00" and unet[0]["SupOnly Dice"] == "40.00"
    assert unet[0]["source"] == "synfoc1/test_last.json - suponly1/test_last.json"
    summary = [r for r in rows if r["seed"] == "mean of 3"]
    assert len(summary) == 2  # U-Net and litemedsam
    assert all(r["Δ mean Dice"] == "**8.33 ± 12.58**" for r in summary)
    assert all(r["source"] == "2/3 above 0" for r in summary)


def test_paired_keeps_settings_apart_and_skips_unpaired_runs(tmp_path: Path, capsys) -> None:
    # Two SynFoC schedules share one SupOnly baseline (method keys do not enter the pairing);
    # a run with other labels has no partner and is skipped with a warning.
    fake_run(tmp_path, "suponly", 0.40, method=SUPONLY)
    fake_run(tmp_path, "faithful", 0.45)
    fake_run(tmp_path, "old", 0.35, method={"ramp_iterations": 100})
    fake_run(tmp_path, "other_labels", 0.9, lb_num=129)
    lines, err = summarize_ok(capsys, *sorted(tmp_path.iterdir()), "--paired")
    assert "other_labels: no SupOnly run" in err
    deltas = {"|".join(line.split("|")[1:3]) for line in lines if "mean of" in line}
    assert len(deltas) == 4  # (faithful, old) x (U-Net, litemedsam)
    assert any("method.ramp_iterations=100" in d for d in deltas)
    assert any("method.ramp_iterations=None" in d for d in deltas)
    text = "\n".join(lines)
    assert "| 5.00 |" in text and "| -5.00 |" in text


def test_paired_without_any_pair_is_an_error(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path, "synfoc", 0.5)
    assert summarize.main([str(tmp_path / "synfoc"), "--paired"]) == 2
    assert "no run could be paired" in capsys.readouterr().err
