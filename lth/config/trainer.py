"""What the user passes through to a library, checked before it is built: Lightning's ``Trainer`` arguments
(``trainer.*``; those the IMP loop owns are refused, naming the key to set instead), the callbacks added under
``callbacks.*``, and the optimiser's keyword arguments (``optim.optimizer.*``).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lth.config.schema import CONF, check
from lth.config.yaml_file import load_yaml
from lth.core.errors import ConfigError

# Lightning's Trainer arguments (2.4 to 2.6); tests/test_layout.py checks them against the installed Trainer
TRAINER_ARGS = tuple(
    "accelerator strategy devices num_nodes precision logger callbacks fast_dev_run max_epochs min_epochs max_steps "
    "min_steps max_time limit_train_batches limit_val_batches limit_test_batches limit_predict_batches "
    "overfit_batches val_check_interval check_val_every_n_epoch num_sanity_val_steps log_every_n_steps "
    "enable_checkpointing enable_progress_bar enable_model_summary accumulate_grad_batches gradient_clip_val "
    "gradient_clip_algorithm deterministic benchmark inference_mode use_distributed_sampler profiler detect_anomaly "
    "barebones plugins sync_batchnorm reload_dataloaders_every_n_epochs default_root_dir enable_autolog_hparams "
    "model_registry".split()
)
HARDWARE_ARGS = ("accelerator", "strategy", "devices", "num_nodes", "precision", "plugins")  # set under hardware.
# what the IMP loop sets itself: lengths, evaluation cadence, checkpoints, logging, data, and where it runs
LOOP_OWNED = (
    *HARDWARE_ARGS,
    "logger",
    "callbacks",
    "fast_dev_run",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "max_time",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "use_distributed_sampler",
    "reload_dataloaders_every_n_epochs",
    "default_root_dir",
    "barebones",
)
LOOP_KEYS = {  # where each owned argument is set instead
    "max_steps": "train.steps",
    "max_epochs": "train.steps",
    "val_check_interval": "train.eval_every",
    "check_val_every_n_epoch": "train.eval_every",
    "enable_checkpointing": "train.checkpoint_every",
    "enable_progress_bar": "train.progress",
    "logger": "logger=",
    "callbacks": "callbacks.<name>",
    **{arg: f"hardware.{arg}" for arg in HARDWARE_ARGS},
}
# the strings Lightning takes for a Trainer argument whose annotation says only ``str`` (Lightning's _init_profiler);
# tests/test_bad_input.py checks them against Lightning's own message
TRAINER_CHOICES = {"profiler": ("simple", "advanced", "pytorch", "xla")}
# callbacks that change what a round is, refused under callbacks.<name> (by class, subclasses too:
# lth.config.targets, and lth.run.build for configs built in code)
NOT_PER_ROUND = {
    "pytorch_lightning.callbacks.ModelCheckpoint": "every round writes round_XX/last.ckpt and its early-stop weights",
    "pytorch_lightning.callbacks.ModelPruning": (
        "the run prunes the weights itself (prune.*), and two pruners would mask the same weights; to start from a "
        "ModelPruning checkpoint's mask: prune.mask_from=<file>"
    ),
    "pytorch_lightning.callbacks.EarlyStopping": (
        "it would end rounds early, so rounds would differ in length; every round trains train.steps and its "
        "early-stop point is its lowest val_loss (early_stop_iteration)"
    ),
}
_ADAM = tuple("lr betas eps weight_decay amsgrad foreach maximize capturable differentiable fused".split())
_SGD = tuple("lr momentum dampening weight_decay nesterov maximize foreach differentiable fused".split())
OPTIMIZER_KEYS = {  # the keyword arguments of each optimiser class (torch 2.2 to 2.14)
    "torch.optim.Adam": (*_ADAM, "decoupled_weight_decay"),
    "torch.optim.AdamW": _ADAM,
    "torch.optim.SGD": _SGD,
}


def check_optimizer(cfg: DictConfig) -> None:
    """``optim``: the optimiser's keys are its class's keyword arguments; each key as the schema says."""
    optimizer = OmegaConf.select(cfg, "optim.optimizer")
    if not isinstance(optimizer, DictConfig):
        raise ConfigError("optim.optimizer", f"got {optimizer!r}; allowed: an optimiser config (optim=adam, sgd)")
    target = optimizer.get("_target_")
    allowed = OPTIMIZER_KEYS.get(target)
    for key in optimizer:
        if allowed is not None and not key.startswith("_") and key not in allowed:
            raise ConfigError(
                f"optim.optimizer.{key}", f"{target} takes no {key!r}; allowed: {', '.join(sorted(allowed))}"
            )
    check(cfg, "optim")
    if optimizer.get("nesterov") and ((optimizer.get("momentum") or 0) <= 0 or (optimizer.get("dampening") or 0)):
        raise ConfigError("optim.optimizer.nesterov", "needs optim.optimizer.momentum > 0 and dampening 0")


def check_trainer(cfg: DictConfig) -> None:
    """``trainer.*``: Lightning Trainer arguments the IMP loop does not own; ``callbacks.*``: each a ``_target_``.
    Their values and classes: :func:`lth.config.targets.check_targets`."""
    trainer = OmegaConf.select(cfg, "trainer") or {}
    for key, value in trainer.items():
        if key in ("_target_", "_partial_") or value is None:
            continue
        if key in LOOP_OWNED:
            where = f"; set {LOOP_KEYS[key]} instead" if key in LOOP_KEYS else ""
            raise ConfigError(f"trainer.{key}", f"is set by the IMP loop for every round{where}")
        if key not in TRAINER_ARGS:
            allowed = ", ".join(a for a in TRAINER_ARGS if a not in LOOP_OWNED)
            raise ConfigError(f"trainer.{key}", f"is not a Lightning Trainer argument; allowed: {allowed}")
    check(cfg, "trainer", "callbacks")
    for name, callback in (OmegaConf.select(cfg, "callbacks") or {}).items():
        if not isinstance(callback, DictConfig) or not isinstance(callback.get("_target_"), str):
            raise ConfigError(f"callbacks.{name}", "needs a _target_ (a Lightning callback class) and its arguments")


def check_loggers(cfg: DictConfig) -> None:
    """``logger``: its keys as the schema says, and each ``logger.<name>`` one of the loggers chosen (``logger=csv``,
    ``logger=[csv,tensorboard]``): a node that ``+logger.<name>.<key>=`` made for a logger not chosen holds none of
    its preset's keys and would be built without them."""
    check(cfg, "logger")
    loggers = OmegaConf.select(cfg, "logger")
    if not isinstance(loggers, DictConfig):
        return
    presets = {str(n): set(load_yaml(CONF / "logger" / f"{n}.yaml", resolve=False).get(n) or ()) for n in loggers}
    chosen = [name for name in presets if presets[name] <= set(loggers[name])]
    for name in presets:
        if name not in chosen:
            with_it = ",".join([*chosen, name])
            raise ConfigError(
                f"logger.{name}",
                f"{name} is not among the loggers chosen ({', '.join(chosen) or 'none'}); add it with "
                f"logger=[{with_it}], or leave out +logger.{name}.*",
            )
