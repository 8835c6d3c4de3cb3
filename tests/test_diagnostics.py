"""scripts/diagnostics.py on real tiny runs: its table agrees with the values train.log printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_train_e2e import train

from dataloaders.synthetic import generate_synthetic
from scripts import diagnostics


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=5, train_per_domain=6, test_per_domain=2, size=64)


def _logged(run_dir: Path, step: int) -> dict[str, float]:
    """The scalars of train.log's line for ``step``."""
    lines = (run_dir / "train.log").read_text().splitlines()
    line = next(text for text in lines if f"step {step}/" in text)
    return {k: float(v) for k, v in re.findall(r"(\S+)=(\S+)", line)}


def test_table_follows_train_log(data_root: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert train(data_root, run, 4) == 0
    assert diagnostics.main([str(run), "--rows", "2", "--csv", str(tmp_path / "d.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:5] == ["step", "lambda", "alpha", "phi_self", "phi_mutual"]
    rows = [dict(zip(header, line.split())) for line in lines[1:]]
    assert [r["step"] for r in rows] == ["1", "3", "4"]  # every 2nd logged step, and the last
    logged = _logged(run, 4)
    assert float(rows[-1]["alpha"]) == pytest.approx(logged["smc/alpha"], rel=1e-3, abs=1e-6)
    ensemble = [v for k, v in logged.items() if k.startswith("diag/pseudo_dice/ensemble/")]
    assert len(ensemble) == 2  # organ, lesion
    expected = sum(ensemble) / 2
    assert float(rows[-1]["pl_dice_ens"]) == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # Per-domain ensemble Dice: one column per domain right after pl_dice_ens, and at step 4
    # the mean over regions of what train.log printed for each domain drawn in that interval.
    prefix = "diag/pseudo_dice_by_domain/ensemble/"
    by_domain = {}
    for key, value in logged.items():
        if key.startswith(prefix):
            by_domain.setdefault(key[len(prefix) :].split("/")[0], []).append(value)
    assert by_domain and all(len(values) == 2 for values in by_domain.values())
    at = header.index("pl_dice_ens") + 1
    assert all(name.startswith("ens_") for name in header[at : at + len(by_domain)])
    for domain, values in by_domain.items():
        cell = float(rows[-1][f"ens_{domain}"])
        assert cell == pytest.approx(sum(values) / 2, rel=1e-3, abs=1e-3)
    assert len((tmp_path / "d.csv").read_text().splitlines()) == 1 + 4  # header + every step

    assert diagnostics.main([str(run), "--rows", "1", "--since", "3"]) == 0
    mean_row = dict(zip(header, capsys.readouterr().out.splitlines()[-1].split()))
    assert mean_row["step"] == ">=3(n=2)"
    late_alpha = [_logged(run, step)["smc/alpha"] for step in (3, 4)]
    expected = sum(late_alpha) / 2
    assert float(mean_row["alpha"]) == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert diagnostics.main([str(run), "--since", "5"]) == 2
    assert "nothing logged at step 5 or later" in capsys.readouterr().err


def test_suponly_run_has_no_teacher_columns(data_root: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    sets = ["--set", "method.supervised_only=true", "--set", "method.consistency=none"]
    assert train(data_root, run, 2, *sets) == 0
    assert diagnostics.main([str(run)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["step", "lambda", "sup_unet", "sup_found"]


def test_not_a_run_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert diagnostics.main([str(tmp_path)]) == 2
    assert "no tb/ folder" in capsys.readouterr().err
