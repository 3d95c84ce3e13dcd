"""The packages are the layers of the method and their imports point one way: core <- lightning, data, models <-
run <- tools. The pure core loads without Lightning, and validating a config loads neither torch nor Lightning."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = {"core": 0, "lightning": 1, "data": 1, "models": 1, "run": 2, "tools": 3}


def lth_imports(path: Path) -> set[str]:
    """Every ``lth.<package>`` a module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("lth.") and len(n.split(".")) > 1}
    return found


MODULES = sorted(p for p in (REPO / "lth").rglob("*.py") if p.parent != REPO / "lth")


def test_every_module_sits_in_a_layer_package() -> None:
    assert sorted(p.name for p in (REPO / "lth").glob("*.py")) == ["__init__.py"]
    assert {p.relative_to(REPO / "lth").parts[0] for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down_the_layers(path: Path) -> None:
    package = path.relative_to(REPO / "lth").parts[0]
    for imported in lth_imports(path) - {package}:
        assert imported in LAYERS, (path, imported)
        assert LAYERS[imported] < LAYERS[package], f"{path.relative_to(REPO)} imports lth.{imported}"


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    return set(out.split())


def test_the_core_does_not_import_lightning_and_validation_not_torch() -> None:
    core = loaded_after("import lth.core.steps, lth.core.masks, lth.core.controls, lth.core.seeds, lth.core.errors")
    assert not {"pytorch_lightning", "lightning", "lightning_fabric", "hydra"} & core
    validation = loaded_after("import lth.config.validate, lth.config.hardware")
    assert not {"torch", "pytorch_lightning", "lightning"} & validation


def test_nothing_uses_fcntl_so_the_run_imports_on_windows() -> None:
    assert not [p for p in (REPO / "lth").rglob("*.py") if "fcntl" in p.read_text()]


def test_the_trainer_arguments_known_to_validation_are_lightnings() -> None:
    import pytorch_lightning as pl

    from lth.config.validate import LOOP_OWNED, TRAINER_ARGS

    assert set(TRAINER_ARGS) == set(list(inspect.signature(pl.Trainer.__init__).parameters)[1:])
    assert set(LOOP_OWNED) <= set(TRAINER_ARGS)
