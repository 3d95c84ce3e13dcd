"""Each config key is defined once, in lth/config/schema.py: the README's key table is rendered from it, it has an
entry for every key of conf/ and no entry that conf/ lacks, the identity's run-only keys are its run-only keys, and
every preset's defaults pass its checks.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from lth.config import schema, table
from lth.config.identity import RUN_ONLY, identity
from lth.config.validate import new_key_allowed
from lth.core.errors import ConfigError
from tests.conftest import REPO

GROUPS = ("dataset", "optim", "prune", "hardware", "logger", "trainer", "paths", "model", "experiment")
ABSENT = object()


@pytest.fixture(scope="module")
def configs() -> dict[str, DictConfig]:
    """The default config (""), every option of every config group, and every entry's ``where``."""
    overrides = ["", *(f"{group}={option}" for group in GROUPS for option in schema.group_options(group))]
    overrides += [entry.where for entry in schema.KEYS if entry.where]
    return {text: table.compose(*text.split()) for text in dict.fromkeys(overrides)}


def config_keys(node: Mapping, prefix: str = "") -> Iterator[str]:
    """The dotted keys of ``node``: its leaves (an empty mapping is one), without Hydra's and ``_target_``-like."""
    for name, value in node.items():
        key = f"{prefix}{name}"
        if key == "hydra" or str(name).startswith("_"):
            continue
        if isinstance(value, Mapping) and value:
            yield from config_keys(value, f"{key}.")
        else:
            yield key


def free_form(key: str) -> bool:
    return any(key == part or key.startswith(f"{part}.") for part in schema.FREE_FORM)


def test_the_readme_key_table_is_the_rendered_schema() -> None:
    readme = (REPO / "README.md").read_text()
    assert table.readme_section(readme) == table.render_table(), "run: python -m lth.config.table --readme"
    assert table.main(["--check"]) == 0


def test_every_key_of_every_preset_has_an_entry(configs: dict[str, DictConfig]) -> None:
    for overrides, cfg in configs.items():
        keys = config_keys(OmegaConf.to_container(cfg, resolve=False))
        missing = [key for key in keys if key not in schema.SCHEMA and not free_form(key)]
        assert missing == [], f"keys of {overrides or 'the default config'} without a schema entry"


def test_every_entry_is_a_key_of_its_config(configs: dict[str, DictConfig]) -> None:
    default = configs[""]
    for entry in schema.KEYS:
        in_default = OmegaConf.select(default, entry.key, default=ABSENT) is not ABSENT
        assert not (entry.where and in_default), f"{entry.key}: in the default config, so no where"
        cfg = configs[entry.where] if entry.where else default
        present = OmegaConf.select(cfg, entry.key, default=ABSENT) is not ABSENT
        if entry.addable:  # an optimiser's argument that no preset sets: +key=value must be accepted
            assert not present and new_key_allowed(cfg, entry.key), entry.key
        else:
            assert present, f"{entry.key}: not in the config composed with {entry.where or 'no overrides'}"


def test_run_only_keys_are_the_schemas() -> None:
    assert RUN_ONLY == schema.run_only_keys()
    assert len(set(RUN_ONLY)) == len(RUN_ONLY)
    user_facing = {e.key for e in schema.KEYS if e.run_only}
    assert set(RUN_ONLY) - set(schema.RUN_ONLY_FIRST + schema.RUN_ONLY_LAST) <= user_facing
    # a run-only entry's keys are run-only too, and none of them is in the identity
    for entry in schema.KEYS:
        parents = [entry.key.rsplit(".", n)[0] for n in range(1, entry.key.count(".") + 1)]
        if any(schema.SCHEMA.get(p) and schema.SCHEMA[p].run_only for p in parents):
            assert entry.run_only, entry.key


def test_the_identity_leaves_out_exactly_the_run_only_keys(configs: dict[str, DictConfig]) -> None:
    cfg = configs[""]
    kept = set(config_keys(identity(cfg)))
    unused = [e.key for e in schema.KEYS if e.used_with and OmegaConf.select(cfg, e.used_with[0]) not in e.used_with[1]]
    assert {"prune.early_bird", "prune.score_batches", "prune.synflow_iterations"} <= set(unused)
    assert "prune.method" not in kept  # the default method leaves no trace
    for entry in schema.KEYS:
        value = OmegaConf.select(cfg, entry.key, default=ABSENT)
        if value is ABSENT or value is None or value == {} or entry.kind == "group" or value == entry.unnamed_at:
            continue  # absent, null (nulls never count), a whole group, or at the value that leaves it out
        if any(entry.key == key or entry.key.startswith(f"{key}.") for key in unused):
            assert not any(k == entry.key or k.startswith(f"{entry.key}.") for k in kept), entry.key
            continue  # options of methods the run does not use
        if entry.run_only:
            assert not any(k == entry.key or k.startswith(f"{entry.key}.") for k in kept), entry.key
        elif not free_form(entry.key):
            assert any(k == entry.key or k.startswith(f"{entry.key}.") for k in kept), entry.key


def test_every_presets_defaults_pass_the_schema(configs: dict[str, DictConfig], make_cfg) -> None:
    checked = [cfg for text, cfg in configs.items() if text != "dataset=image_folder"]
    checked.append(make_cfg("dataset=image_folder", "dataset.num_classes=3", fast=False))  # no class folders here
    for cfg in checked:
        for entry in schema.KEYS:
            if not entry.custom:
                schema.check_key(cfg, entry.key)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("prune.rate", 1.5, "prune.rate"),
        ("prune.rounds", 1.5, "prune.rounds"),
        ("seed", True, "seed"),
        ("prune.scope", "diagonal", "prune.scope"),
        ("train.progress", "maybe", "train.progress"),
        ("train.steps", "500", "train.steps"),
        ("train.eval_every", "0it", "train.eval_every"),
        ("prune.rewind", "later", "prune.rewind"),
        ("optim.schedule.milestones", "80ep", "optim.schedule.milestones"),
        ("optim.schedule.milestones", ["80"], "optim.schedule.milestones"),
        ("optim.optimizer.betas", [0.9], "optim.optimizer.betas"),
        ("prune.include", [1], "prune.include"),
        ("dataset.std", [0.0], "dataset.std"),
        ("dataset.augment", {"flipp": True}, "dataset.augment.flipp"),
        ("dataset.augment", [4], "dataset.augment"),
        ("dataset.name", "", "dataset.name"),
        ("logger", "csv", "logger"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(key: str, value: Any, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        schema.SCHEMA[key].check(value)
    assert error.value.key == named and "\n" not in str(error.value)
    if "got" in error.value.message and "allowed" in error.value.message:
        assert error.value.message.endswith(f"allowed: {schema.SCHEMA[key].allowed}")


def test_null_absent_and_words_instead_of_steps() -> None:
    assert schema.SCHEMA["data_seed"].check(None) is None
    assert schema.SCHEMA["prune.rewind"].check("lr") == "lr"
    assert str(schema.SCHEMA["prune.rewind"].check("0it")) == "0it"
    with pytest.raises(ConfigError, match="^seed: got None"):
        schema.SCHEMA["seed"].check(None)
    assert schema.SCHEMA["prune.rate"].allowed == "a number in (0, 1)"
    assert schema.SCHEMA["optim.optimizer.lr"].allowed == "a number > 0"
    with pytest.raises(ValueError, match="cannot read the spec"):
        schema.Key("x", "float (0, 1)", "help")


def test_the_schema_is_imported_without_torch_lightning_or_hydra() -> None:
    code = "import sys, lth.config.schema; print(sorted(m for m in sys.modules if m.split('.')[0] in {0}))"
    heavy = "{'torch', 'lightning', 'pytorch_lightning', 'hydra'}"
    result = subprocess.run([sys.executable, "-c", code.format(heavy)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
