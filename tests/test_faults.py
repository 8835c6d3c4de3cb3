"""The fault suite: each case is a fault a run can meet, the one-line error or the recovery the
code promises, and a check that no earlier checkpoint was damaged. docs/RELIABILITY.md lists the
promises and the test of each.

Cases: a checkpoint whose pickle runs code (test.py, train.py --resume, python -m networks); a
diverging run (non-finite loss, non-finite weights); kill -9 during a checkpoint write, then
--resume; a truncated last.pt; a failed checkpoint write; a run folder on a read-only path;
an unknown config key and a value of the wrong type; and, for every dataset spec, a labeled set
smaller than the labeled batch, an empty domain, a domain without train files, a corrupt image
and a mask with unexpected values. Elsewhere: pairing errors, missing folders, lb_num out of
range, masks of another size (tests/test_datasets.py), the real unpaired prostate sample
(tests/test_data_cli.py), refused resumes of another experiment (tests/test_resume.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, make_trainer, run_module
from PIL import Image
from test_train_e2e import TINY, train

import test as test_cli
import train as train_cli
from dataloaders.__main__ import main as check_data
from dataloaders.datasets import scan_split
from dataloaders.specs import DATASETS, SYNTHETIC, DatasetSpec
from dataloaders.synthetic import generate_synthetic
from engine.checkpoint import load_checkpoint
from engine.guards import DivergedError


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, seed=5, train_per_domain=6, test_per_domain=2, size=64)


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run (last.pt and best.pt at step 2); tests work on copies of it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert train(data_root, out, 2) == 0
    return out


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def error_line(capsys: pytest.CaptureFixture) -> str:
    """The one error line a CLI printed last on stderr (log lines may precede it; no
    traceback may)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


def checkpoint_bytes(run_dir: Path) -> dict[str, bytes]:
    """Every file of ``run_dir/checkpoints`` (temporary files included) and its content."""
    return {p.name: p.read_bytes() for p in sorted((run_dir / "checkpoints").iterdir())}


# ------------------------------------------------------------------------- checkpoint safety
class CodeOnLoad:
    """Pickles as a call of ``open(marker, "w")``: unpickling it creates the marker file, as a
    crafted checkpoint would run any code it likes."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_code_running_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format_version": 1, "step": 2, "models": CodeOnLoad(marker)}, path)


def test_the_crafted_checkpoint_runs_code_when_loaded_unsafely(tmp_path: Path) -> None:
    """The control: the file the next test feeds the CLIs does run code under a plain unpickler."""
    marker = tmp_path / "ran"
    write_code_running_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_code_running_checkpoint_is_refused_everywhere(run_copy: Path, tmp_path: Path, capsys):
    marker = tmp_path / "ran"
    for name in ("last.pt", "best.pt"):
        write_code_running_checkpoint(run_copy / "checkpoints" / name, marker)
    before = checkpoint_bytes(run_copy)
    refused = "refused: it asks for io.open, which loading could run as code"
    assert test_cli.main(["--run", str(run_copy), "--device", "cpu", "--no_progress"]) == 2
    assert refused in error_line(capsys)
    assert train_cli.main(["--resume", str(run_copy), "--no_progress"]) == 2
    assert refused in error_line(capsys)
    # python -m networks reads foundation weights files (the only checkpoints it reads).
    evil = run_copy / "checkpoints" / "best.pt"
    result = run_module("networks", "--foundation", "litemedsam", "--checkpoint", str(evil))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and refused in result.stderr, result.stderr
    assert not marker.exists()
    assert checkpoint_bytes(run_copy) == before


def test_truncated_last_checkpoint_is_a_one_line_error(run_copy: Path, capsys) -> None:
    last = run_copy / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = checkpoint_bytes(run_copy)
    for main, args in (
        (train_cli.main, ["--resume", str(run_copy), "--no_progress"]),
        (test_cli.main, ["--run", str(run_copy), "--device", "cpu", "--no_progress"]),
    ):
        assert main(args) == 2
        line = error_line(capsys)
        assert f"{last} is unreadable (truncated or damaged" in line
        assert line.endswith("also holds best.pt")  # what the user can fall back to
    assert checkpoint_bytes(run_copy) == before
    assert load_checkpoint(run_copy / "checkpoints" / "best.pt")["step"] == 2


def test_failed_checkpoint_write_leaves_the_old_one(run_copy: Path, monkeypatch, capsys) -> None:
    """A full disk while writing last.pt: one line, the old last.pt intact, no temporary left."""
    before = checkpoint_bytes(run_copy)

    def disk_full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    assert (
        train_cli.main(["--resume", str(run_copy), "--max_iterations", "3", "--no_progress"]) == 2
    )
    line = error_line(capsys)
    assert "cannot write checkpoint" in line and "No space left on device" in line
    assert line.endswith("it is unchanged")
    assert checkpoint_bytes(run_copy) == before


# Runs train.py's main with os.replace paused at the Nth rename onto last.pt: the temporary file
# is written, the rename has not happened. The test kills the process with SIGKILL there. The
# driver uses this process's thread count: CPU reductions split over another number of threads
# round differently, and the resumed run (in this process) must match the straight one bit for bit.
KILL_DRIVER = """
import json, os, sys, time
from pathlib import Path
import torch
import train
pause_at, ready, argv = int(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
real_replace, renames = os.replace, []
def replace(src, dst):
    if Path(dst).name == "last.pt":
        renames.append(dst)
        if len(renames) == pause_at:
            ready.write_text(str(src))
            time.sleep(600)
    real_replace(src, dst)
os.replace = replace
sys.exit(train.main(argv))
"""


def start_paused_at_checkpoint(args: list[str], pause_at: int, ready: Path) -> subprocess.Popen:
    """train.py ``args`` in a subprocess, waiting until it is paused before the ``pause_at``-th
    rename onto last.pt."""
    threads = str(torch.get_num_threads())
    command = [sys.executable, "-c", KILL_DRIVER, str(pause_at), str(ready), json.dumps(args)]
    command.append(threads)
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ready.exists():
        if process.poll() is not None:
            pytest.fail(f"the training process ended before the pause: {process.stderr.read()}")
        assert time.monotonic() < deadline, "the training process never reached the pause"
        time.sleep(0.1)
    return process


def test_kill_during_checkpoint_write_then_resume(data_root: Path, tmp_path: Path) -> None:
    """kill -9 between writing .last.pt.tmp and its rename at step 3: last.pt still holds step 2
    complete, and --resume from it ends with the weights of an uninterrupted run."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    cadence = ["--set", "train.eval_interval=4"]
    args = ["--config", "configs/demo.yaml", "--root", str(data_root), "--out", str(killed)]
    args += ["--max_iterations", "4", "--set", "train.checkpoint_interval=1", *cadence, *TINY]
    process = start_paused_at_checkpoint(args, pause_at=3, ready=tmp_path / "paused")
    before = (killed / "checkpoints" / "last.pt").read_bytes()
    assert (killed / "checkpoints" / ".last.pt.tmp").is_file()  # the step-3 write, not renamed
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert (killed / "checkpoints" / "last.pt").read_bytes() == before
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["step"] == 2

    assert train_cli.main(["--resume", str(killed), "--no_progress"]) == 0
    assert "resumed from" in (killed / "train.log").read_text()
    assert not (killed / "checkpoints" / ".last.pt.tmp").exists()  # overwritten, then renamed
    assert train(data_root, straight, 4, *cadence) == 0
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    for model, weights in a["models"].items():
        for name, tensor in weights.items():
            assert torch.equal(tensor, b["models"][model][name]), f"{model}.{name} differs"


# -------------------------------------------------------------------------------- divergence
@pytest.fixture(scope="module")
def diverging(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 finite steps of a run whose U-Net lr (1e6) makes it diverge a few steps later: last.pt
    and best.pt of step 2 hold finite weights; resuming it runs into the divergence."""
    out = tmp_path_factory.mktemp("diverging") / "run"
    assert train(data_root, out, 2, "--set", "optim.unet_lr=1e6") == 0
    return out


def resume_diverging(source: Path, out: Path, log: int, checkpoint: int) -> int:
    """Resume a copy of ``source`` at ``out`` to step 12 with the given log / checkpoint
    intervals (no evaluation on the way)."""
    shutil.copytree(source, out)
    cadence = [f"train.log_interval={log}", f"train.checkpoint_interval={checkpoint}"]
    sets = [a for s in [*cadence, "train.eval_interval=100"] for a in ("--set", s)]
    return train_cli.main(["--resume", str(out), "--max_iterations", "12", *sets, "--no_progress"])


def test_nonfinite_loss_stops_the_run_at_the_next_log(diverging: Path, tmp_path: Path, capsys):
    """Logged every step, the run stops at the first nan step; logged every 3, at the next log
    step, naming the same first step; the step-2 checkpoints stay byte for byte."""
    before = checkpoint_bytes(diverging)
    assert resume_diverging(diverging, tmp_path / "every", log=1, checkpoint=100) == 3
    line = error_line(capsys)
    assert line.startswith("error: training diverged: a loss term is not finite from step ")
    first = int(line.split("from step ")[1].split()[0])
    assert first > 2 and "sup/unet=nan" in line and f"at step {first} (" in line
    assert resume_diverging(diverging, tmp_path / "every3", log=3, checkpoint=100) == 3
    line = error_line(capsys)
    found = -(-first // 3) * 3  # the first log step from `first` on
    assert f"not finite from step {first} on:" in line and f"at step {found} (" in line
    assert "checkpoints/ left as they were (last.pt: step 2)" in line
    for run in ("every", "every3"):
        assert checkpoint_bytes(tmp_path / run) == before
        assert sorted(p.name for p in (tmp_path / run / "eval").iterdir()) == ["2.json"]


def test_nonfinite_weights_are_never_checkpointed(data_root: Path, tmp_path: Path) -> None:
    """A step with a finite loss can leave inf weights behind (an overflowing update): the check
    before a checkpoint write finds them although no log came in between."""
    trainer = make_trainer(data_root, tmp_path / "run")
    trainer.iterate()
    trainer.save_checkpoints("last")
    before = checkpoint_bytes(tmp_path / "run")
    trainer.iterate()
    with torch.no_grad():
        next(trainer.models.unet.parameters()).view(-1)[0] = math.inf
    with pytest.raises(
        DivergedError, match=r"weights of unet not finite after step 2 .*last.pt: step 1"
    ):
        trainer.save_checkpoints("last")
    assert checkpoint_bytes(tmp_path / "run") == before


# ---------------------------------------------------------------------------- run set-up faults
def read_only_folder(tmp_path: Path) -> Path:
    """A folder in which this process cannot create anything: a mode-555 folder, or, for root
    (whom file modes do not stop), /sys, where sysfs refuses new entries to everyone."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder if not os.access(folder, os.W_OK) else Path("/sys")


def test_run_folder_on_a_read_only_path(data_root: Path, tmp_path: Path, capsys) -> None:
    out = read_only_folder(tmp_path) / "run"
    assert train(data_root, out, 1) == 2
    line = error_line(capsys)
    assert f"cannot write into {out} (" in line and "writes its logs and checkpoints" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.alpah=smc", "unknown config key method.alpah; expected one of students"),
        ("optimizer.lr=1", "unknown config section 'optimizer'"),
        ("train.max_iterations=many", "train.max_iterations: expected int, got 'many'"),
        ("data.lb_num=2.5", "data.lb_num: expected int, got 2.5"),
        ("method.copy_paste=sometimes", "method.copy_paste: expected bool, got 'sometimes'"),
        ("method.cp_area=0.3", "method.cp_area: expected a list, got 0.3"),
    ],
    ids=["unknown-key", "unknown-section", "str-for-int", "float-for-int", "bool", "list"],
)
def test_bad_config_values_are_one_line_errors(tmp_path: Path, capsys, override, message) -> None:
    out = tmp_path / "run"
    args = ["--config", "configs/demo.yaml", "--out", str(out), "--set", override]
    assert train_cli.main(args) == 2
    assert error_line(capsys).startswith(f"error: {message}")
    assert not out.exists()


def test_wrong_type_in_a_config_file(tmp_path: Path, capsys) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(f"base: {REPO / 'configs' / 'demo.yaml'}\ntrain:\n  log_interval: often\n")
    assert train_cli.main(["--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys) == "error: train.log_interval: expected int, got 'often'"


# -------------------------------------------------------------------------- data, every spec
def _raw_pixels(spec: DatasetSpec, value, size: int = 16) -> np.ndarray:
    """A mask image of one raw value in the spec's mask mode (gray level or RGB colour)."""
    shape = (size, size, 3) if spec.mask_mode == "RGB" else (size, size)
    return np.broadcast_to(np.array(value, np.uint8), shape).copy()


def write_sample(spec: DatasetSpec, image: Path, mask: Path, seed: int) -> None:
    """A noise image with the spec's channels and a mask of background with a foreground box."""
    rng = np.random.default_rng(seed)
    shape = (16, 16) if spec.in_channels == 1 else (16, 16, 3)
    encoding = dict((index, value) for value, index in spec.mask_encoding)
    pixels = _raw_pixels(spec, encoding[0])
    pixels[4:10, 5:12] = np.array(encoding[1], np.uint8)
    for path, array in ((image, rng.integers(0, 256, shape, dtype=np.uint8)), (mask, pixels)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)


def _split_folders_tree(spec: DatasetSpec, root: Path, train_count: int) -> None:
    for domain in spec.domains:
        for split, count in (("train", train_count), ("test", 1)):
            for i in range(count):
                folder = root / domain / split
                name = f"{i:02d}.png"
                write_sample(
                    spec, folder / spec.image_subdir / name, folder / spec.mask_subdir / name, i
                )


def _class_folders_tree(spec: DatasetSpec, root: Path, train_count: int) -> None:
    # Enough samples that the last test_fraction of them holds one test image.
    total = max(train_count + 1, int(np.ceil(1 / spec.test_fraction)))
    for domain in spec.domains:
        for i in range(1, total + 1):
            folder, name = root / domain, f"{domain} ({i})"
            write_sample(spec, folder / f"{name}.png", folder / f"{name}{spec.mask_suffix}.png", i)


NATIVE_TREES = {"split_folders": _split_folders_tree, "class_folders": _class_folders_tree}


def native_tree(spec: DatasetSpec, root: Path, train_count: int = 3) -> Path:
    """A tiny dataset in ``spec``'s native layout: ``train_count`` train images per domain and
    one test image each, noise images, masks of the spec's raw values."""
    assert spec.layout in NATIVE_TREES, f"the fault suite has no tree for layout {spec.layout}"
    NATIVE_TREES[spec.layout](spec, root, train_count)
    return root


def check(spec: DatasetSpec, root: Path, lb_num: int = 2, labeled_bs: int = 2) -> int:
    """``python -m dataloaders`` on ``root``: the same scan, split and decode as training."""
    args = ["--dataset", spec.name, "--root", str(root), "--lb_num", str(lb_num)]
    return check_data([*args, "--labeled_bs", str(labeled_bs), "--no_progress"])


# The PNG layouts; the h5 layout's faults (missing dataset, label outside 0..3, a listed case
# without its file, a file that is not h5) are tested on the real ACDC sample in test_h5.py.
PNG_SPECS = {name: s for name, s in DATASETS.items() if s.layout in NATIVE_TREES}
SPECS = pytest.mark.parametrize("spec", list(PNG_SPECS.values()), ids=list(PNG_SPECS))


@SPECS
def test_the_fake_tree_passes_the_data_check(spec: DatasetSpec, tmp_path: Path, capsys) -> None:
    """The control of the cases below: the untouched tree is valid, so each fault is the cause."""
    assert check(spec, native_tree(spec, tmp_path)) == 0, capsys.readouterr().err
    assert "total" in capsys.readouterr().out


@SPECS
def test_labeled_set_smaller_than_the_batch(spec: DatasetSpec, tmp_path: Path, capsys) -> None:
    assert check(spec, native_tree(spec, tmp_path), lb_num=1, labeled_bs=2) == 2
    assert "lb_num=1 is smaller than labeled_bs=2" in error_line(capsys)


@SPECS
def test_empty_domain(spec: DatasetSpec, tmp_path: Path, capsys) -> None:
    root = native_tree(spec, tmp_path)
    for path in (root / spec.domains[1]).rglob("*.png"):
        path.unlink()
    assert check(spec, root) == 2
    assert f"{root / spec.domains[1]}: no test samples; expected some" in error_line(capsys)


@pytest.mark.parametrize(
    "spec",
    [s for s in DATASETS.values() if s.layout == "split_folders"],
    ids=[n for n, s in DATASETS.items() if s.layout == "split_folders"],
)
def test_domain_without_train_files(spec: DatasetSpec, tmp_path: Path, capsys) -> None:
    root = native_tree(spec, tmp_path)
    for path in (root / spec.domains[1] / "train").rglob("*.png"):
        path.unlink()
    assert check(spec, root) == 2
    assert f"{root / spec.domains[1]}: no train samples; expected some" in error_line(capsys)


@SPECS
def test_corrupt_image(spec: DatasetSpec, tmp_path: Path, capsys) -> None:
    root = native_tree(spec, tmp_path)
    image = scan_split(spec, root, 1, "train")[0].image
    image.write_bytes(image.read_bytes()[:40])  # a truncated PNG
    assert check(spec, root) == 2
    assert f"error: {image}: cannot read image (" in error_line(capsys)


@SPECS
def test_mask_with_unexpected_values(spec: DatasetSpec, tmp_path: Path, capsys) -> None:
    root = native_tree(spec, tmp_path)
    mask = scan_split(spec, root, 1, "train")[0].masks[0]
    raw = {value for value, _ in spec.mask_encoding}
    stray = (1, 2, 3) if spec.mask_mode == "RGB" else min(set(range(256)) - raw)
    pixels = np.asarray(Image.open(mask).convert(spec.mask_mode)).copy()
    pixels[0, 0] = stray
    Image.fromarray(pixels).save(mask)
    assert check(spec, root) == 2
    line = error_line(capsys)
    assert f"{mask}: unexpected mask values [{stray}]; expected only" in line


def test_train_stops_on_bad_data_before_any_checkpoint(tmp_path: Path, capsys) -> None:
    """train.py reaches the same data check: one line, no checkpoint."""
    root = native_tree(SYNTHETIC, tmp_path / "data", train_count=6)
    image = scan_split(SYNTHETIC, root, 2, "train")[-1].image
    image.write_bytes(b"not a png")
    out = tmp_path / "run"
    args = ["--config", "configs/demo.yaml", "--root", str(root), "--out", str(out)]
    assert train_cli.main([*args, "--max_iterations", "1", *TINY]) == 2
    assert f"error: {image}: cannot read image (" in error_line(capsys)
    assert not (out / "checkpoints").exists()
