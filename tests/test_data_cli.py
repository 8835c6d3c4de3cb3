"""The data-check CLI, ``python -m dataloaders``, run as users run it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import run_module

from dataloaders.__main__ import main
from dataloaders.synthetic import generate_synthetic

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_module("dataloaders", *args, timeout=120)


def test_fundus_samples_table(samples_root) -> None:
    result = _run("--dataset", "fundus", "--root", str(samples_root / "Fundus"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("Domain1 (Drishti-GS)", "Domain2", "Domain3", "Domain4", "%cup", "%rim"):
        assert name in out
    assert "800x800" in out
    assert "warning: Domain1: 1 train samples, the reference's domain_len says 50" in out
    row = next(line for line in out.splitlines() if line.startswith("Domain2"))
    assert row.split()[2:6] == ["1", "1", "0", "1"]  # train, test, labeled, unlabeled


def test_synthetic_table(tmp_path) -> None:
    root = generate_synthetic(tmp_path, train_per_domain=3, test_per_domain=2, size=48)
    result = _run("--dataset", "synthetic", "--root", str(root), "--lb_domain", "siteB")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    assert rows["siteA"][1:5] == ["3", "2", "0", "3"]
    assert rows["siteB"][1:5] == ["3", "2", "3", "0"]  # default lb_num = min(20, 3)
    assert rows["total"][1:5] == ["9", "6", "3", "6"]
    assert "warning" not in result.stdout  # the synthetic spec has no reference counts


def test_unpaired_prostate_image_fails_in_one_line(samples_root) -> None:
    result = _run("--dataset", "prostate", "--root", str(samples_root / "ProstateSlice"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "I2CVB/train/image/00_01.png: image has no mask" in lines[0]


def test_missing_root_fails_in_one_line(tmp_path) -> None:
    result = _run("--dataset", "busi", "--root", str(tmp_path / "absent"))
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: {tmp_path / 'absent'}: dataset root not found; " + (
        "expected the busi folder"
    )


def test_bad_keys_fail_in_one_line(tmp_path, capsys) -> None:
    assert main(["--dataset", "nope", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'nope'" in err
    root = generate_synthetic(tmp_path, train_per_domain=2, test_per_domain=1, size=32)
    assert main(["--dataset", "synthetic", "--root", str(root), "--lb_domain", "siteZ"]) == 2
    assert "unknown domain 'siteZ'" in capsys.readouterr().err
    args = ["--dataset", "synthetic", "--root", str(root), "--lb_num", "2", "--labeled_bs", "4"]
    assert main(args) == 2
    assert "loops forever" in capsys.readouterr().err
