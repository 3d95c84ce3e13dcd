"""Bad input to ``train.py``, one table: every bad value is one stderr line ``error: <key>: ...``, exit code 2, no
traceback, and nothing under the output folder. Most rows go through ``train.py``'s command line in this process
(the checks run before Hydra starts, ``main`` is replaced); the rows marked ``SUB`` run the whole of ``python
train.py`` as a user does (``run_main``: its entry point, Hydra and ``main``, in this process), among them those
refused only once the data or the model is built (after the run folder exists, which must go again). A few of them
also run in a subprocess (slow), as typed in a shell.

The checks run before torch is imported; the names they repeat from the modules that use them are checked here.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import EarlyStopping

import train as train_script
from lth.config import command_line
from lth.config.hardware import PRECISION_ALIASES, PRECISIONS, STRATEGIES, has_gpu
from lth.config.identity import identity
from lth.config.validate import OPTIMIZER_KEYS, check_steps, validate
from lth.core.errors import ConfigError
from tests.conftest import FAST, REPO, run_main, run_train, subprocess_env, typed

SUB = "train.py"  # the row runs the whole of train.py (run_main): Hydra, then main
GPU = has_gpu()

# (arguments, the key the error names, how it runs); {tmp} is this test's folder, {out} the output folder
BAD_INPUT = [
    # Hydra's own errors: a group option or key that does not exist, a sweep without -m, unreadable overrides
    ("model=lenet301", "model", SUB),
    ("optim=rmsprop", "optim", SUB),
    ("logger=[csv,foo]", "logger", SUB),
    ("experiment=lenet_cifar", "experiment", SUB),
    ("hydra/launcher=foo", "hydra/launcher", SUB),
    ("prune.rat=0.5", "prune.rat", SUB),
    ("+prune.rat=0.5", "prune.rat", SUB),
    ("+train.stepz=100it", "train.stepz", SUB),
    ("+modle=lenet5", "modle", SUB),
    ("modle=lenet5", "modle", ""),
    ("++prune.rat=0.5", "prune.rat", ""),
    ("+prune.rate=0.5", "prune.rate", ""),
    ("~prune.nothing", "prune.nothing", ""),
    ("+optim.optimizer.momentum=0.9", "optim.optimizer.momentum", ""),  # Adam takes no momentum
    ("optim.optimizer.betas=[0.9,0.99]", "optim.optimizer.betas", ""),  # not in the preset: needs +
    ("+model.width=2", "model.width", ""),
    ("prune.rate=[", "prune.rate", ""),
    ("prune.rate=0.1,0.2", "prune.rate", SUB),
    ("--cfg foo", "--cfg/-c", ""),
    # a sweep with one bad job is refused before the first job starts, naming the job
    ("-m prune.rate=1.5,0.2 hydra.sweep.dir={out}/sweep", "prune.rate", SUB),
    ("-m seed=0,-1 hydra.sweep.dir={out}/sweep", "seed", ""),
    ("-m hardware=ddp_cpu prune.rate=0.1,0.2 hydra.sweep.dir={out}/sweep", "hardware", ""),
    # values
    ("prune.rate=2", "prune.rate", SUB),
    ("prune.rounds=5000", "prune.rounds", ""),
    ("prune.layer_rates={model.out:1.5}", "prune.layer_rates.model.out", ""),
    ("prune.exclude=['*']", "prune.exclude", ""),
    ("prune.rewind=99999999999999999999it", "prune.rewind", ""),
    ("seed=abc", "seed", ""),
    ("resume=maybe", "resume", ""),
    ("train.save_weights=maybe", "train.save_weights", ""),
    ("train.progress=maybe", "train.progress", ""),
    ("train.steps=99999999999999999999it", "train.steps", ""),
    ("train.steps=2000000ep", "train.steps", ""),
    ("train.batch_size=2000", "train.batch_size", ""),  # 1000 training images
    ("train.checkpoint_every=15it", "train.checkpoint_every", ""),
    ("optim.schedule.milestones=[40it]", "optim.schedule.milestones", ""),  # beyond train.steps=30it
    ("optim.schedule.milestones=[2ep]", "optim.schedule.milestones", ""),  # an epoch is 17 iterations here
    ("optim.schedule.warmup=50it", "optim.schedule.warmup", ""),
    ("optim=sgd optim.optimizer.momentum=-1", "optim.optimizer.momentum", ""),
    ("optim.optimizer.weight_decay=-1", "optim.optimizer.weight_decay", ""),
    ("+optim.optimizer.betas=[0.9]", "optim.optimizer.betas", ""),
    ("+optim.optimizer.betas=[0.9,1.5]", "optim.optimizer.betas", ""),
    ("optim=sgd optim.optimizer.nesterov=true optim.optimizer.momentum=0", "optim.optimizer.nesterov", ""),
    ("optim=sgd optim.optimizer.nesterov=maybe", "optim.optimizer.nesterov", ""),
    ("dataset.num_classes=0", "dataset.num_classes", ""),
    ("dataset.image_size=-1", "dataset.image_size", ""),
    ("dataset.channels=0", "dataset.channels", ""),
    ("dataset.std=[0]", "dataset.std", ""),
    ("dataset.mean=[0.5,0.5]", "dataset.mean", ""),
    ("dataset.val_size=1200", "dataset.val_size", ""),  # synthetic: 1200 training images
    ("dataset.loader=disk", "dataset.loader", ""),
    ("dataset.num_workers=-1", "dataset.num_workers", ""),
    ("dataset.augment={flipp:true}", "dataset.augment.flipp", ""),
    ("dataset.augment={crop_padding:-1}", "dataset.augment.crop_padding", ""),
    ("dataset=mnist dataset.image_size=32", "dataset.image_size", ""),
    ("dataset=cifar10 dataset.num_classes=5", "dataset.num_classes", ""),
    ("dataset=mnist dataset.source.download=maybe", "dataset.source.download", ""),
    ("dataset=image_folder paths.data_dir={tmp}/nowhere", "paths.data_dir", ""),
    ("logger=wandb logger.wandb.mode=sometimes", "logger.wandb.mode", ""),
    # hardware: what Lightning refuses with a traceback, and a GPU this machine lacks
    ("hardware.devices=0", "hardware.devices", ""),
    ("hardware.devices=abc", "hardware.devices", ""),
    ("hardware.devices=-2", "hardware.devices", ""),
    ("hardware=cpu hardware.devices=[0,1]", "hardware.devices", ""),
    ("hardware.precision=17", "hardware.precision", ""),
    ("hardware.precision=fp7", "hardware.precision", ""),
    ("hardware.strategy=foo", "hardware.strategy", ""),
    ("hardware.strategy=ddp_spawn", "hardware.strategy", ""),
    ("hardware.threads=-1", "hardware.threads", ""),
    ("hardware.threads=0", "hardware.threads", ""),
    ("hardware.accelerator=tpu", "hardware.accelerator", ""),
    ("hardware.num_nodes=0", "hardware.num_nodes", ""),
    ("hardware.rank_report=maybe", "hardware.rank_report", ""),
    pytest.param("hardware=gpu", "hardware.accelerator", SUB, marks=pytest.mark.skipif(GPU, reason="has a GPU")),
    # where results go
    ("paths.output_dir=", "paths.output_dir", ""),
    ("paths.output_dir={tmp}/a_file", "paths.output_dir", ""),
    ("paths.output_dir={tmp}/a_file/below", "paths.output_dir", SUB),
    ("paths.output_dir={tmp}/read_only/out", "paths.output_dir", ""),
    ("paths.data_dir={tmp}/a_file", "paths.data_dir", ""),
    # refused once the model or the data is built: the run folder Hydra made is removed again
    ("model=vgg19", "model", SUB),  # 28x28 images: VGG needs a multiple of 32
    ("prune.exclude=[model.*]", "prune.exclude", SUB),
    ("dataset=image_folder paths.data_dir={tmp}/images", "paths.data_dir", SUB),  # class folders without images
    ("prune.granularity=3:2", "prune.granularity", ""),
    ("prune.granularity=block", "prune.granularity", ""),
    ("prune.granularity=channel prune.target_sparsity=0.5", "prune.granularity", ""),
    ("prune.granularity=2:4 prune.layer_rates={model.out:0.1}", "prune.granularity", ""),
    ("prune.channel_criterion=l3", "prune.channel_criterion", ""),
    ("model=lenet5 prune.granularity=2:4", "prune.granularity", SUB),  # conv1's rows are 1 x 5 x 5 = 25 wide
    ("model=vit prune.granularity=channel", "prune.granularity", SUB),  # attention's in_proj_weight
    ("prune.granularity=channel prune.channel_criterion=bn_scale", "prune.channel_criterion", SUB),  # no BatchNorm
    # models of other libraries, pre-trained weights, masks of other runs and tools
    ("model=torchvision", "model", SUB),  # torchvision's models take 3-channel images; MNIST has 1
    ("model=timm model.arch=resnet_does_not_exist", "model", SUB),
    ("model=timm +model.pretrained=true", "model", SUB),  # would download
    ("model=torchvision model.weights=IMAGENET1K_V1", "model.weights", ""),  # a hub name, offline
    ("+model.weights={tmp}/no_such_file.pt", "model.weights", ""),
    ("model=hf model.config=google/vit-base-patch16-224", "model.config", ""),  # a hub name, offline
    ("+model.weights={tmp}/a_file", "model.weights", SUB),  # not a state_dict
    ("model=custom model._target_=torch.nn.Identity", "model", SUB),  # gives 784 outputs, not 10
    ("model=custom model._target_=no.such.Net", "model", SUB),
    ("prune.mask_from={tmp}/no_such_run", "prune.mask_from", ""),
    ("prune.mask_from={tmp}/images@3", "prune.mask_from", ""),  # a folder without rounds
    ("prune.mask_from={tmp}/a_file", "prune.mask_from", SUB),  # not a mask file
    ("prune.mask_unmatched=maybe", "prune.mask_unmatched", ""),
    ("prune.mask_from_zeros=true", "prune.mask_from_zeros", ""),  # reads the file of prune.mask_from: none
    ("prune.mask_from_zeros=maybe", "prune.mask_from_zeros", ""),
    ("prune.mask_from={tmp}/a_file prune.method=snip prune.rounds=1 prune.target_sparsity=0.5", "prune.mask_from", ""),
    ("prune.mask_from={tmp}/masks/none_kept.pt", "prune.mask_from", SUB),  # every weight pruned
    ("prune.mask_from={tmp}/masks/other_model.pt prune.mask_unmatched=dense", "prune.mask_from", SUB),  # fits nothing
    ("prune.mask_unmatched=dense", "prune.mask_unmatched", SUB),  # without prune.mask_from
    ("prune.method=snip prune.rounds=1 prune.target_sparsity=0.5 prune.score_batches=18", "prune.score_batches", SUB),
    # the doors that take any Python object: Trainer arguments (by Lightning's annotations), callbacks, _target_
    ("+trainer.benchmark=maybe", "trainer.benchmark", SUB),
    ("+trainer.profiler=nonsense", "trainer.profiler", SUB),
    ("+trainer.detect_anomaly=abc", "trainer.detect_anomaly", SUB),
    ("+trainer.inference_mode=abc", "trainer.inference_mode", SUB),
    ("+trainer.sync_batchnorm=abc", "trainer.sync_batchnorm", SUB),
    ("+trainer.gradient_clip_algorithm=value +trainer.model_registry=[1]", "trainer.model_registry", SUB),
    ("+callbacks.x._target_=pytorch_lightning.callbacks.EarlyStopping +callbacks.x.monitor=nope", "callbacks.x", SUB),
    (
        "+callbacks.y._target_=pytorch_lightning.callbacks.EarlyStopping +callbacks.y.monitor=val_loss",
        "callbacks.y",
        "",
    ),
    ("+callbacks.x._target_=tests.test_bad_input.EarlyBirdStop", "callbacks.x", SUB),  # a subclass of EarlyStopping
    ("+callbacks.x._target_=torch.nn.Linear", "callbacks.x._target_", SUB),  # not a callback
    ("+callbacks.x._target_=no.such.Callback", "callbacks.x._target_", SUB),
    ("+callbacks.x._target_=pytorch_lightning.callbacks.Timer +callbacks.x.nope=1", "callbacks.x.nope", SUB),
    (
        "+callbacks.x._target_=pytorch_lightning.callbacks.LearningRateMonitor +callbacks.x.logging_interval=bad",
        "callbacks.x.logging_interval",
        SUB,
    ),  # by its annotation
    ("+callbacks.x._target_=pytorch_lightning.callbacks.Timer +callbacks.x.duration=abc", "callbacks.x", SUB),  # built
    ("dataset.source._target_=torch.nn.Linear", "dataset.source.train_size", SUB),
    ("logger=tensorboard logger.tensorboard.default_hp_metric=abc", "logger.tensorboard.default_hp_metric", SUB),
    ("logger=mlflow logger.mlflow.tracking_uri=123", "logger.mlflow.tracking_uri", ""),
    ("logger=wandb logger.wandb.project=", "logger.wandb.project", ""),
    ("logger=[[csv]]", "logger", SUB),
    ("logger=[csv,csv]", "logger", SUB),
    ("logger=[many,csv]", "logger", SUB),
    ("logger=[]", "logger", SUB),
    ("logger=[csv,none]", "logger", SUB),
    ("logger=csv +logger.csv.foo=1", "logger.csv.foo", SUB),
    ("logger=csv +logger.tensorboard.name=x", "logger.tensorboard", SUB),
    ("logger=csv logger.csv._target_=foo.Bar", "logger.csv._target_", SUB),
    ("optim.optimizer._target_=foo.Bar", "optim.optimizer._target_", SUB),
    ("optim.optimizer._target_=torch.nn.Linear", "optim.optimizer._target_", SUB),
    ("trainer._target_=foo.Bar", "trainer._target_", SUB),
    ("trainer._target_=torch.nn.Linear", "trainer._target_", SUB),
    ("model=custom", "model", SUB),  # without model._target_
    ("~model._target_", "model", SUB),
    ("~trainer._target_", "trainer._target_", SUB),
    ("~optim.optimizer._target_", "optim.optimizer._target_", SUB),
    ("optim.optimizer._partial_=false", "optim.optimizer._partial_", SUB),  # the loop passes the parameters
    ("dataset.source._target_=lth.data.sources.nothing", "dataset.source._target_", SUB),
]


class EarlyBirdStop(EarlyStopping):
    """A callback of the user's own that ends rounds early: refused as EarlyStopping is."""

    def __init__(self) -> None:
        super().__init__(monitor="val_loss")


@pytest.fixture
def places(tmp_path: Path) -> Path:
    """The folders and files that rows refer to: a file, a read-only folder, image class folders without images."""
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "masks").mkdir()
    shapes = {"model.layers.0.weight": (300, 784), "model.layers.1.weight": (100, 300), "model.out.weight": (10, 100)}
    none_kept = {n: torch.zeros(shape, dtype=torch.bool) for n, shape in shapes.items()}
    torch.save(none_kept, tmp_path / "masks/none_kept.pt")
    torch.save({"model.conv.weight": torch.ones(3, 3, dtype=torch.bool)}, tmp_path / "masks/other_model.pt")
    (tmp_path / "read_only").mkdir()
    (tmp_path / "read_only").chmod(0o555)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "images" / "images" / split / label).mkdir(parents=True)
    yield tmp_path
    (tmp_path / "read_only").chmod(0o755)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def command_of(arguments: str, places: Path) -> list[str]:
    """The command line of a row: Hydra's flags first (-m, --cfg <what>), then the shrunk config, then its overrides."""
    out = places / "out"
    tokens = arguments.replace("{tmp}", str(places)).replace("{out}", str(out)).split(" ")
    flags = []
    while tokens and tokens[0].startswith("-"):
        flags.append(tokens.pop(0))
        if flags[-1] == "--cfg":
            flags.append(tokens.pop(0))
    return [*flags, *FAST, f"paths.output_dir={out}", *tokens]


def assert_refused_in_one_line(places: Path, code: int, stderr: str, key: str) -> None:
    out = places / "out"
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), stderr
    assert "Traceback" not in stderr
    assert files_under(out) == []
    assert not (out / "runs").exists() and not (out / "sweep").exists()
    assert (places / "a_file").read_text() == "not a folder\n"


@pytest.mark.parametrize(("arguments", "key", "how"), BAD_INPUT)
def test_bad_input_is_one_line_naming_the_key(places: Path, monkeypatch, capsys, arguments, key, how) -> None:
    args = command_of(arguments, places)
    if how == SUB:
        result = run_main(*args, cwd=places)
        code, stderr = result.returncode, result.stderr
    else:
        monkeypatch.setattr(train_script, "main", lambda: pytest.fail(f"{arguments} was accepted"))
        monkeypatch.setattr(sys, "argv", ["train.py"])
        with pytest.raises(SystemExit) as exit_:
            train_script.cli(args)
        code, stderr = exit_.value.code, capsys.readouterr().err
    assert_refused_in_one_line(places, code, stderr, key)


AS_TYPED = ["model=lenet301", "-m prune.rate=1.5,0.2 hydra.sweep.dir={out}/sweep", "prune.rate=2", "model=vgg19"]


@pytest.mark.slow
@pytest.mark.parametrize("arguments", AS_TYPED)
def test_bad_input_typed_in_a_shell_is_one_line_naming_the_key(places: Path, arguments: str) -> None:
    """Rows of each kind (Hydra's own error, a sweep, a value, the model once built) in a subprocess."""
    (row,) = [row for row in BAD_INPUT if (row.values if hasattr(row, "values") else row)[0] == arguments]
    assert row[2] == SUB
    result = run_train(*command_of(arguments, places), cwd=places)
    assert_refused_in_one_line(places, result.returncode, result.stderr, row[1])


def test_the_table_is_large_and_runs_many_rows_as_a_user_does() -> None:
    rows = [row.values if hasattr(row, "values") else row for row in BAD_INPUT]
    assert len(rows) >= 60 and len({r[0] for r in rows}) == len(rows)
    assert sum(r[2] == SUB for r in rows) >= 15


def test_a_sweep_with_one_bad_job_names_the_job_before_any_starts(tmp_path: Path) -> None:
    result = run_main("-m", *FAST, "prune.rate=0.2,1.5", "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: prune.rate: got 1.5; allowed: a number in (0, 1) (sweep job 2: prune.rate=1.5 seed=0)"
    )
    assert not (tmp_path / "sweep").exists()


def test_group_errors_list_the_options_and_unknown_keys_suggest_the_closest() -> None:
    with pytest.raises(ConfigError) as error:
        command_line.check_command_line(["model=lenet301"])
    allowed = "conv2, conv4, conv6, custom, hf, lenet300, lenet5"
    assert str(error.value).startswith(f"model: no option 'lenet301'; allowed: {allowed}")
    with pytest.raises(ConfigError, match=r"^prune.rat: no such key; prune has: .*; did you mean prune.rate\?$"):
        command_line.check_command_line(["+prune.rat=0.5"])


# -- what is accepted ----------------------------------------------------------------------------------


def test_layer_rates_is_set_without_plus_and_replaces_the_presets(make_cfg) -> None:
    assert command_line.replace_mapping("prune.layer_rates={model.out: 0.1}") == [
        "prune.layer_rates=null",
        "+prune.layer_rates={model.out: 0.1}",
    ]
    assert command_line.replace_mapping("prune.rate=0.1") == ["prune.rate=0.1"]
    overrides = command_line.replace_mapping("prune.layer_rates={model.layers.0: 0.3}")
    for preset, expected in ((None, {"model.layers.0": 0.3}), ("lenet_mnist", {"model.layers.0": 0.3})):
        cfg = make_cfg(*([f"experiment={preset}"] if preset else []), *overrides)
        assert dict(cfg.prune.layer_rates) == expected  # the preset's {model.out: 0.1} is replaced, not merged
    argv = command_line.check_command_line([*FAST, "prune.scope=layer", "prune.layer_rates={model.out:0.1}"]).argv
    assert argv[-2:] == ["prune.layer_rates=null", "+prune.layer_rates={model.out:0.1}"]


def test_keys_that_may_be_added_are_accepted(tmp_path: Path) -> None:
    for extra in (
        ["+prune.layer_rates={model.out: 0.1}"],
        ["+optim.optimizer.betas=[0.8,0.9]", "+optim.optimizer.amsgrad=true"],
        ["+logger.wandb.notes=hello", "logger=wandb"],
        ["optim=sgd", "optim.optimizer.nesterov=true"],
        ["prune.target_sparsity=0.5"],
        ["hardware.devices=auto", "hardware.precision=bf16-mixed", "hardware.threads=1"],
        ["+trainer.profiler=simple", "+trainer.benchmark=true", "+trainer.detect_anomaly=false"],
        ["logger=[csv,tensorboard]", "+logger.tensorboard.name=x"],
        ["+callbacks.t._target_=pytorch_lightning.callbacks.Timer", "+callbacks.t.duration=null"],
        ["model.hidden=[]"],  # no hidden layer: a linear classifier
        ["hardware=cpu", "hardware.devices=3"],  # 3 CPU processes under DDP, as hardware=ddp_cpu
    ):
        assert command_line.check_command_line([*FAST, f"paths.output_dir={tmp_path}", *extra]).checked
    assert not (tmp_path / "runs").exists()


def test_a_slurm_sweep_is_validated_on_a_machine_without_its_gpus() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = ["hydra/launcher=slurm", "hardware=ddp", "hardware.devices=4", "prune.rate=0.1,0.2"]
    command_line.check_jobs([*FAST, *overrides], multirun=True)  # the jobs' GPUs are on the cluster's nodes


def test_an_image_folder_counts_its_classes(make_cfg, tmp_path: Path) -> None:
    for label in ("ants", "bees", "wasps"):
        (tmp_path / "bugs" / "train" / label).mkdir(parents=True)
    counted = make_cfg("dataset=image_folder", "dataset.name=bugs", f"paths.data_dir={tmp_path}")
    given = make_cfg("dataset=image_folder", "dataset.name=bugs", f"paths.data_dir={tmp_path}", "dataset.num_classes=3")
    assert counted.dataset.num_classes == 3 and counted.dataset.source.num_classes == 3
    assert identity(counted) == identity(given)  # the same run folder whether the count is given or read
    validate(counted)


def test_iterations_per_epoch_known_up_front_match_the_data(make_cfg) -> None:
    from lth.config.validate import _iterations_per_epoch
    from lth.run.build import build_data

    for loader in ("memory", "torchvision"):
        for world, hardware in ((1, []), (2, ["hardware=ddp_cpu"]), (3, ["hardware=ddp_cpu", "hardware.devices=3"])):
            cfg = make_cfg(f"dataset.loader={loader}", *hardware)
            data = build_data(typed(cfg))
            assert _iterations_per_epoch(cfg, 1000, 60) == data.batches_per_epoch(world), (loader, world)
    cfg = make_cfg("train.steps=2ep", "optim.schedule.milestones=[34it]")  # 2ep = 34it: a milestone at the end
    with pytest.raises(ConfigError, match="^optim.schedule.milestones: 34it is not before the end"):
        check_steps(cfg, 17)
    check_steps(cfg, None)  # epochs against iterations: not comparable before the data is known


# -- fast, and without torch ---------------------------------------------------------------------------


def test_a_bad_value_is_refused_without_importing_torch_or_lightning(tmp_path: Path) -> None:
    env = subprocess_env()
    for args, code in ((["prune.rate=2"], 2), (["--help"], 0)):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(REPO / "train.py"), *args, "paths.output_dir=out"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == code, result.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line}
        assert "torch" not in imported and "pytorch_lightning" not in imported and "lightning" not in imported
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == []
    assert not (tmp_path / "out").exists()


def test_the_names_repeated_for_validation_match_their_modules() -> None:
    import torch
    from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from pytorch_lightning.strategies import StrategyRegistry

    from lth.config import schema
    from lth.config import validate as config
    from lth.core.catalog import CONTROLS, METHODS
    from lth.core.earlybird import DISTANCES
    from lth.core.granularity import CHANNEL_CRITERIA
    from lth.core.scores import PRUNING_AT_INIT
    from lth.data.augment import KEYS
    from lth.data.module import LOADERS
    from lth.lightning.callback import REWIND_MODES
    from lth.lightning.module import SCHEDULES

    assert config.SCHEDULES == SCHEDULES and config.CONTROLS == CONTROLS.names and config.LOADERS == LOADERS
    assert config.REWIND_MODES == REWIND_MODES and config.AUGMENT_KEYS == KEYS
    assert schema.METHODS == METHODS.names and schema.PRUNING_AT_INIT == PRUNING_AT_INIT
    assert schema.EARLY_BIRD_DISTANCES == DISTANCES
    assert config.CHANNEL_CRITERIA == CHANNEL_CRITERIA
    assert set(PRECISIONS) == set(typing.get_args(_PRECISION_INPUT_STR))
    assert {str(p) for p in PRECISION_ALIASES} == set(typing.get_args(_PRECISION_INPUT_STR_ALIAS))
    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())
    for target, keys in OPTIMIZER_KEYS.items():
        signature = set(inspect.signature(eval(target, {"torch": torch})).parameters) - {"params"}
        assert signature <= set(keys), target  # a key torch added is missing here


def test_the_trainer_choices_are_lightnings() -> None:
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from lth.config.trainer import TRAINER_CHOICES

    with pytest.raises(MisconfigurationException) as error:
        pl.Trainer(profiler="nonsense", logger=False)
    assert str(list(TRAINER_CHOICES["profiler"])) in str(error.value)


def test_values_are_checked_against_the_annotation_alone() -> None:
    """Any argument of any class: the annotation says what is allowed (the Trainer's are one use of it)."""
    from typing import Literal

    from lth.config.targets import conforms, describe

    hint = bool | Literal["warn"] | None
    assert [conforms(v, hint) for v in (True, "warn", None, "maybe", 1)] == [True, True, True, False, False]
    assert describe(hint) == "true, false, warn or null"
    assert conforms(2, float) and not conforms(True, int) and not conforms(2.5, int)
    assert conforms([1, 2], list[int] | None) and not conforms("ab", dict[str, int])
    assert conforms({"_target_": "pkg.Profiler"}, pl_profiler_hint()) and not conforms(3, pl_profiler_hint())


def pl_profiler_hint() -> object:
    import typing

    import pytorch_lightning as pl

    return typing.get_type_hints(pl.Trainer.__init__)["profiler"]


def test_validation_of_a_config_object_needs_no_hydra_run(make_cfg) -> None:
    validate(make_cfg())
    with pytest.raises(ConfigError, match="^hardware.threads: got 0"):
        validate(make_cfg("hardware.threads=0"))


def test_score_batches_past_an_image_folders_epoch_is_refused_before_anything_is_written(places: Path) -> None:
    """An image folder's size is known once it is read: the run refuses then, in one line, and leaves nothing."""
    from PIL import Image

    for split, count in (("train", 10), ("test", 2)):
        for label, shade in (("a", 0), ("b", 255)):
            (places / "pics" / "pics" / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), shade).save(places / "pics" / "pics" / split / label / f"{i}.png")
    data = ["dataset=image_folder", "dataset.name=pics", f"paths.data_dir={places / 'pics'}", "dataset.channels=1"]
    data += ["dataset.image_size=8", "dataset.val_size=4", "train.batch_size=4"]  # 16 training images: 4 batches
    snip = ["prune.method=snip", "prune.rounds=1", "prune.target_sparsity=0.5", "prune.score_batches=5"]
    result = run_main(*command_of(" ".join([*data, *snip]), places), cwd=places)
    assert_refused_in_one_line(places, result.returncode, result.stderr, "prune.score_batches")
    assert "at most 4" in result.stderr
