"""The house's rules, checked: packages are the layers of the method and their imports point one way (core <- config
<- lightning, data, models <- state <- run <- tools), no module imports itself back through others, nothing below the
entry point handles Hydra's ``DictConfig``, and modules and functions stay small enough to read in one sitting.
The pure core loads without Lightning, and validating a config loads neither torch nor Lightning."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = {"core": 0, "config": 1, "lightning": 2, "data": 2, "models": 2, "state": 3, "run": 4, "tools": 5}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 400, 60, 6
# Declarative tables, exempt from the module size: every config key once (its type, range, help)
DECLARATIVE = {"lth/config/keys.py"}
# Constructors and pure functions whose arguments are one per config key or architecture hyperparameter, as a user
# passes them (the callback in a plain Lightning script, a model class from a model config, a data source from a
# dataset config): exempt from the parameter count, not from the length
MANY_ARGUMENTS = {
    "lth/core/masks.py:prune",  # rate, scope, layer_rates, target_sparsity, round: the prune.* keys
    "lth/lightning/callback.py:__init__",  # LotteryTicket(rate, scope, ..., criterion): one per prune.* key
    "lth/lightning/module.py:__init__",  # Classifier(network, optimizer, schedule, lengths, compile)
    "lth/data/module.py:__init__",  # ImageData: one per dataset.* and train.* key it reads
    "lth/data/loader.py:__init__",  # TensorBatches(x, y, batch, shuffle, seed, drop_last, ...)
    "lth/data/sources.py:synthetic",  # dataset.source.* of dataset=synthetic
    "lth/models/resnet.py:__init__",  # architecture hyperparameters (model.*)
    "lth/models/vit.py:__init__",  # architecture hyperparameters (model.*)
    "lth/run/loggers/wandb_run.py:__init__",  # W&B's own options, passed through from logger.wandb.*
    "lth/run/loggers/mlflow_run.py:__init__",  # MLflow's own options, passed through from logger.mlflow.*
}
# Where a DictConfig is handled: the configuration package (composition, validation, typing), train.py (Hydra's
# main), and nowhere else: below the entry point everything takes a lth.config.run.RunConfig
HYDRA_NAMES = ("DictConfig", "ListConfig", "open_dict", "HydraConfig")
OMEGACONF_OPS = ("select", "create", "merge", "update", "set_struct")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``lth`` module a module imports, at the top or inside a function (``from lth.x import y`` counts
    ``lth.x.y`` where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n for n in found if n.startswith("lth.") and n in NAMES}


MODULES = sorted(p for p in (REPO / "lth").rglob("*.py") if p.parent != REPO / "lth")
NAMES = {module_name(p) for p in MODULES}


def test_every_module_sits_in_a_layer_package() -> None:
    assert sorted(p.name for p in (REPO / "lth").glob("*.py")) == ["__init__.py"]
    assert {p.relative_to(REPO / "lth").parts[0] for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down_the_layers(path: Path) -> None:
    package = path.relative_to(REPO / "lth").parts[0]
    for imported in {m.split(".")[1] for m in imported_modules(path)} - {package}:
        assert LAYERS[imported] < LAYERS[package], f"{path.relative_to(REPO)} imports lth.{imported}"


def test_no_module_imports_itself_back() -> None:
    graph = {module_name(p): imported_modules(p) - {module_name(p)} for p in MODULES}
    # a package's __init__ importing its own modules is not a circle through them
    graph = {m: {i for i in imports if not m.startswith(i + ".")} for m, imports in graph.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            assert state.get(other) != 1, "import circle: " + " -> ".join([*path, module, other])
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def hydra_uses(path: Path) -> set[str]:
    """What of Hydra's config objects a file's code names (docstrings and comments aside)."""
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name) and node.id in HYDRA_NAMES:
            used.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "OmegaConf":
            if node.attr in OMEGACONF_OPS:
                used.add(f"OmegaConf.{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            used |= {a.name for a in node.names if a.name in HYDRA_NAMES}
    return used


BELOW_THE_ENTRY = [p for p in MODULES if p.relative_to(REPO).parts[:2] != ("lth", "config")]


@pytest.mark.parametrize("path", [*BELOW_THE_ENTRY, *sorted((REPO / "scripts").glob("*.py"))], ids=str)
def test_nothing_below_the_entry_point_handles_a_dictconfig(path: Path) -> None:
    assert not hydra_uses(path), f"{path.relative_to(REPO)}: take a lth.config.run.RunConfig instead"


def test_modules_and_functions_are_small() -> None:
    too_big = []
    for path in [*MODULES, REPO / "train.py"]:
        name, text = str(path.relative_to(REPO)), path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES and name not in DECLARATIVE:
            too_big.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            count = len([a for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")])
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                too_big.append(f"{name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
            if count > MAX_PARAMETERS and f"{name}:{node.name}" not in MANY_ARGUMENTS:
                too_big.append(f"{name}:{node.name}: {count} parameters")
    assert not too_big


def test_train_py_is_hydras_main_and_the_exit_codes() -> None:
    assert len((REPO / "train.py").read_text().splitlines()) < 80


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    return set(out.split())


def test_the_core_does_not_import_lightning_and_the_configuration_not_torch() -> None:
    core = loaded_after("import lth.core.steps, lth.core.masks, lth.core.controls, lth.core.seeds, lth.core.errors")
    assert not {"pytorch_lightning", "lightning", "lightning_fabric", "hydra"} & core
    config = loaded_after("import lth.config.entry, lth.config.command_line, lth.config.identity, lth.config.run")
    assert not {"torch", "pytorch_lightning", "lightning"} & config


def test_nothing_uses_fcntl_so_the_run_imports_on_windows() -> None:
    assert not [p for p in (REPO / "lth").rglob("*.py") if "fcntl" in p.read_text()]


def test_the_trainer_arguments_known_to_validation_are_lightnings() -> None:
    import pytorch_lightning as pl

    from lth.config.trainer import LOOP_OWNED, TRAINER_ARGS

    assert set(TRAINER_ARGS) == set(list(inspect.signature(pl.Trainer.__init__).parameters)[1:])
    assert set(LOOP_OWNED) <= set(TRAINER_ARGS)
