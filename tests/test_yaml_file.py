"""``lth.config.yaml_file.load_yaml`` reads what OmegaConf reads, as OmegaConf reads it: every file of ``conf/``,
the config a run writes, and the values where YAML 1.1 and OmegaConf disagree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lth.config.yaml_file import load_yaml
from tests.conftest import REPO


def omegaconf_reads(path: Path, resolve: bool) -> object:
    loaded = OmegaConf.load(path)
    return OmegaConf.to_container(loaded, resolve=resolve) if OmegaConf.is_config(loaded) else loaded


def test_every_config_file_reads_as_omegaconf_reads_it() -> None:
    files = sorted((REPO / "conf").rglob("*.yaml"))
    assert len(files) > 50
    for path in files:
        assert load_yaml(path, resolve=False) == omegaconf_reads(path, resolve=False), path


def test_floats_timestamps_interpolations_and_a_key_twice_as_in_omegaconf(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("lr: 1e-3\nwd: 5.0e-4\nday: 2001-01-01\nrate: .5\nsteps: 1_000\nname: '1e-3'\ncopy: ${lr}\n")
    read = load_yaml(path)
    assert read == omegaconf_reads(path, resolve=True)
    assert read == {"lr": 0.001, "wd": 0.0005, "day": "2001-01-01", "rate": 0.5, "steps": 1000, "name": "1e-3",
                    "copy": 0.001}  # fmt: skip
    assert load_yaml(path, resolve=False)["copy"] == "${lr}"
    path.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(yaml.YAMLError, match="duplicate key a"):
        load_yaml(path)
    path.write_text("# nothing\n")
    assert load_yaml(path) == {} == omegaconf_reads(path, resolve=True)


VALUES = ["1e-3", "1.", ".5", "1_000.5", "1:30.5", "1:30", "-.inf", ".nan", "2001-01-01", "2001-01-01 10:00:00", "0o17",
          "0x1F", "010", "yes", "off", "~", "null", "'1e-3'", "1e3", "+12", "1_000", "-0"]  # fmt: skip


@pytest.mark.parametrize("value", VALUES)
def test_each_implicit_type_resolves_as_in_omegaconf(tmp_path: Path, value: str) -> None:
    path = tmp_path / "value.yaml"
    path.write_text(f"value: {value}\npath: !!python/object/apply:pathlib.PosixPath [/a, b]\n")
    ours, theirs = load_yaml(path, resolve=False), omegaconf_reads(path, resolve=False)
    assert ours == theirs and type(ours["value"]) is type(theirs["value"]), (ours, theirs)


def test_a_run_s_config_reads_back_as_written(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from lth.config.entry import load_run
    from lth.state.artifacts import write_config

    run = load_run(make_cfg("optim.optimizer.lr=1e-5", "prune.rate=0.25"))
    write_config(tmp_path / "config.yaml", run)
    assert load_yaml(tmp_path / "config.yaml") == omegaconf_reads(tmp_path / "config.yaml", resolve=True)
    assert load_yaml(tmp_path / "config.yaml")["optim"]["optimizer"]["lr"] == 1e-5
