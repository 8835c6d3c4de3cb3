"""The layering of docs/ARCHITECTURE.md, read from the imports of every module: entry points ->
engine -> method / evaluation -> networks / dataloaders -> utils, never upwards or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

# Package -> the project packages its modules may import (besides their own).
ALLOWED = {
    "engine": {"method", "evaluation", "networks", "dataloaders", "utils"},
    "method": set(),  # the paper's method: torch only
    "evaluation": {"dataloaders", "utils"},
    "networks": {"utils"},
    "dataloaders": {"utils"},
    "utils": set(),
}
PROJECT = {*ALLOWED, "scripts", "train", "test"}


def _imported_packages(path: Path) -> set[str]:
    """Top-level project packages imported anywhere in a module (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downwards(package: str) -> None:
    modules = sorted((REPO / package).glob("*.py"))
    assert modules, f"{package}/ holds no module"
    wrong = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) - ALLOWED[package] - {package})
        for path in modules
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


def _imported_modules(path: Path) -> set[str]:
    """Every module name imported by a module, dotted as written."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def _called_names(path: Path) -> set[str]:
    """Dotted names of everything a module calls (``open``, ``torch.save``, ...)."""
    return {
        ast.unparse(n.func)
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Call)
    }


def test_the_method_reads_no_files_and_owns_no_optimizer() -> None:
    """method/ is pure tensors: no I/O, optimizers, logging or EMA (the engine's jobs)."""
    banned_imports = ("logging", "os", "pathlib", "json", "yaml", "tqdm", "torch.optim", "h5py")
    banned_imports += ("torch.utils.tensorboard", "PIL")
    banned_calls = {"open", "print", "torch.save", "torch.load"}
    for path in sorted((REPO / "method").glob("*.py")):
        imported = _imported_modules(path)
        bad = [m for m in imported for b in banned_imports if m == b or m.startswith(b + ".")]
        assert not bad, f"{path.name} imports {bad}"
        assert not _called_names(path) & banned_calls, path.name
