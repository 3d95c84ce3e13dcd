"""Every user-facing config key, declared once: its type, what is allowed, whether it is run-only, its help.

A declarative table (:class:`lth.config.key.Key` entries, in the order the README lists them); :mod:`lth.config.schema`
reads it. Defaults are not here: they stay in the YAML files of ``conf/``, Hydra's one source of defaults.
"""

from __future__ import annotations

from lth.config.hardware import ACCELERATORS, PRECISIONS, STRATEGIES
from lth.config.key import MAX_ITERATIONS, Key
from lth.core import catalog

MAX_ROUNDS = 1000
# Names that live next to the code using them, repeated here so that validation needs no torch;
# tests/test_bad_input.py checks that the copies agree. The ideas (methods, controls, rewinds) are the catalog's.
SCHEDULES = ("constant", "step", "cosine")  # lth.lightning.module.SCHEDULES
CONTROLS = catalog.CONTROLS.names
PRUNING_AT_INIT = catalog.METHODS.with_trait(catalog.SCORES_INITIAL_WEIGHTS)
METHODS = catalog.METHODS.names
EARLY_BIRD_DISTANCES = ("all", "kept")  # lth.core.earlybird.DISTANCES
CHANNEL_CRITERIA = ("l1", "l2", "bn_scale")  # lth.core.granularity.CHANNEL_CRITERIA
REWIND_MODES = catalog.REWIND_WORDS
LOADERS = ("memory", "torchvision")  # lth.data.module.LOADERS
WANDB_MODES = ("online", "offline", "disabled")


_CHECKED_BY_HARDWARE = "lth.config.hardware.check_values"
_CHECKED_BY_VALIDATE = "lth.config.validate.validate"
_CHECKED_BY_TRANSFER = "lth.run.transfer.check"

DECLARED = (
    # -- top level --------------------------------------------------------------------------------------------
    Key("seed", "int [0, 2147483648)", "the one seed: init, data order, augmentation and controls draw from it"),
    Key(
        "data_seed", "int [0, 2147483648)", "another data order for the same init (instability analysis)", nullable=True
    ),
    Key("resume", "bool", "true: continue the interrupted run of this config from its last checkpoint", run_only=True),
    Key(
        "callbacks",
        "mapping",
        "extra Lightning callbacks: `+callbacks.<name>._target_=<class>` and its arguments",
        nullable=True,
        also="each needs a _target_",
    ),
    # -- train ------------------------------------------------------------------------------------------------
    Key("train.steps", "step", "training length of each round"),
    Key(
        "train.eval_every",
        "step",
        "validation cadence; the early-stop point is the lowest validation loss",
        also="at most train.steps",
    ),
    Key(
        "train.batch_size",
        "int >= 1",
        "training batch of each process (the effective batch: times world_size)",
        also="at most the training images per process",
    ),
    Key(
        "train.save_weights", "bool", "keep each round's weights at the early-stop point (early_stop.pt)", run_only=True
    ),
    Key("train.eval_batch_size", "int >= 1", "batch size of validation and test", run_only=True),
    Key(
        "train.progress",
        "bool",
        "each round's iteration, rate and time left: a live line on a terminal, else a line per tenth of a round "
        "(1 to 5 minutes apart)",
        run_only=True,
    ),
    Key(
        "train.checkpoint_every",
        "step",
        "also checkpoint during a round (null: at its end)",
        nullable=True,
        run_only=True,
        also="a multiple of train.eval_every",
    ),
    Key(
        "train.share_dense",
        "bool",
        "runs that share round 0 (model, data, seed, training) train it once",
        nullable=True,
        run_only=True,
    ),
    Key(
        "train.compile",
        "bool",
        "torch.compile the network (masks still hold; pays on GPUs)",
        nullable=True,
        run_only=True,
    ),
    Key(
        "train.engine",
        "choice",
        "what trains the run: lightning (a Trainer per round) or stacked (many runs as one vmapped network; "
        "hydra/launcher=stacked)",
        choices=("lightning", "stacked"),
        unnamed_at="lightning",
    ),
    # -- prune ------------------------------------------------------------------------------------------------
    Key("prune.rate", "number (0, 1)", "fraction of the surviving prunable weights removed per round"),
    Key(
        "prune.rounds",
        f"int [0, {MAX_ROUNDS}]",
        "pruning rounds after round 0 (a run has rounds + 1 rows)",
        also="at least 1 with prune.target_sparsity",
    ),
    Key(
        "prune.target_sparsity",
        "number (0, 1)",
        "if set, replaces rate: equal rounds, the last ends at this sparsity",
        nullable=True,
        also="not with prune.layer_rates",
    ),
    Key(
        "prune.scope",
        "choice",
        "global: one threshold over all prunable tensors; layer: each tensor alone",
        choices=("global", "layer"),
    ),
    Key(
        "prune.layer_rates",
        "mapping",
        "layers (name patterns) pruned at their own rate; replaces the preset's",
        nullable=True,
        allowed_text="a mapping of name pattern to a number in (0, 1)",
        example="{model.out: 0.1}",
        also="each pattern matches a layer; not with prune.target_sparsity",
    ),
    Key(
        "prune.include",
        "patterns",
        "prune only the layers these match (empty: every Linear and Conv weight)",
        nullable=True,
        example="['*conv*']",
    ),
    Key(
        "prune.exclude",
        "patterns",
        "never prune the layers these match",
        nullable=True,
        example="[model.out]",
        also="not '*'",
    ),
    Key(
        "prune.extra",
        "patterns",
        "parameters to prune too, by name pattern",
        nullable=True,
        example="['*.in_proj_weight']",
    ),
    Key(
        "prune.rewind",
        "step >= 0",
        "what later rounds restart from: init, a Step of round 0, lr, none (fine-tune)",
        choices=REWIND_MODES,
        also="a Step before train.steps; none not under a cosine schedule",
    ),
    Key(
        "prune.method",
        "choice",
        "how masks are found: magnitude or lamp (IMP, one-shot), early_bird, or pruning at init (snip ... random)",
        choices=METHODS,
        also="early_bird and at init: prune.target_sparsity set, prune.rounds 1, prune.rewind init (at init); "
        "lamp: prune.scope global",
        unnamed_at="magnitude",
    ),
    Key(
        "prune.early_bird",
        "mapping",
        "early_bird's draw criterion (You et al. 2020)",
        closed=True,
        used_with=("prune.method", catalog.METHODS.with_trait(catalog.DRAWN_DURING_TRAINING)),
    ),
    Key("prune.early_bird.window", "int >= 2", "early_bird: masks compared (the newest and the ones before it)"),
    Key("prune.early_bird.epsilon", "number (0, 1)", "early_bird: drawn when every distance to the newest is below"),
    Key(
        "prune.early_bird.distance",
        "choice",
        "early_bird: differing weights over all weights (You et al.) or over what two masks can differ on",
        choices=EARLY_BIRD_DISTANCES,
    ),
    Key(
        "prune.score_batches",
        "int >= 1",
        "snip, grasp: training batches (train.batch_size) the scores sum over",
        used_with=("prune.method", catalog.METHODS.with_trait(catalog.NEEDS_SCORE_BATCHES)),
    ),
    Key(
        "prune.synflow_iterations",
        "int >= 1",
        "synflow: scoring and pruning steps to the target sparsity",
        used_with=("prune.method", catalog.METHODS.with_trait(catalog.ITERATES_SCORES)),
    ),
    Key(
        "prune.control",
        "choice",
        "null: the ticket; else a control trained on the ticket's masks",
        choices=CONTROLS,
        nullable=True,
        custom=_CHECKED_BY_VALIDATE,
        also="needs prune.rewind init or a Step",
    ),
    Key(
        "prune.granularity",
        "str",
        "weight: single weights; channel: whole output channels (tied through skips); n:m: n of every m inputs",
        allowed_text="weight, channel, or n:m with 0 < n < m such as 2:4",
        custom=_CHECKED_BY_VALIDATE,
        also="not with prune.target_sparsity or prune.layer_rates unless weight; n:m: input widths multiples of m",
        unnamed_at="weight",
    ),
    Key(
        "prune.channel_criterion",
        "choice",
        "how channel ranks channels: l1, l2 (per weight of the filter) or bn_scale (BatchNorm weight)",
        choices=CHANNEL_CRITERIA,
        unnamed_at="l1",
        used_with=("prune.granularity", catalog.GRANULARITIES.with_trait(catalog.WHOLE_CHANNELS)),
        also="in the run's identity with prune.granularity=channel only",
    ),
    Key(
        "prune.mask_from",
        "path",
        "round 0 starts from this mask: a run folder[@round], a round folder, or a mask file (ours, torch-prune, "
        "open_lth)",
        nullable=True,
        allowed_text="null, or a run folder[@round], a round folder, a mask.pt / mask.pth / state_dict file",
        example="outputs/runs/<run_id>@3",
        custom=_CHECKED_BY_TRANSFER,
        also="in the identity by its content hash; prune.control null, random_prune or shuffle",
    ),
    Key(
        "prune.mask_from_zeros",
        "bool",
        "read mask_from's weights (a ModelPruning checkpoint made permanent) as a mask: a zero is pruned, so is a "
        "weight trained to exactly 0",
        unnamed_at=False,
        also="needs prune.mask_from",
    ),
    Key(
        "prune.mask_unmatched",
        "choice",
        "prunable tensors mask_from lacks or that do not fit: refuse (null) the run, or start them dense",
        choices=("refuse", "dense"),
        nullable=True,
        custom=_CHECKED_BY_TRANSFER,
    ),
    # -- optim ------------------------------------------------------------------------------------------------
    Key("optim.name", "str", "the optimiser preset's name (set by optim=)"),
    Key("optim.optimizer.lr", "number > 0", "learning rate (the schedule's peak)"),
    Key("optim.optimizer.weight_decay", "number >= 0", "weight decay (AdamW: decoupled)", nullable=True, optional=True),
    Key("optim.optimizer.momentum", "number [0, 1)", "SGD's momentum", nullable=True, optional=True, where="optim=sgd"),
    Key(
        "optim.optimizer.nesterov",
        "bool",
        "SGD's Nesterov momentum",
        optional=True,
        where="optim=sgd",
        also="needs momentum > 0 and dampening 0",
    ),
    Key(
        "optim.optimizer.dampening",
        "number [0, 1]",
        "SGD's dampening of the momentum",
        nullable=True,
        optional=True,
        where="optim=sgd",
        addable=True,
    ),
    Key(
        "optim.optimizer.betas",
        "numbers [0, 1)",
        "Adam's decay rates of its running averages",
        length=2,
        nullable=True,
        optional=True,
        addable=True,
        example="[0.9, 0.999]",
    ),
    Key(
        "optim.optimizer.eps",
        "number > 0",
        "Adam's term added to the denominator",
        nullable=True,
        optional=True,
        addable=True,
    ),
    Key("optim.optimizer.amsgrad", "bool", "Adam's AMSGrad variant", optional=True, addable=True),
    Key("optim.optimizer.maximize", "bool", "maximise the objective instead", optional=True, addable=True),
    Key(
        "optim.optimizer.foreach",
        "bool",
        "torch's multi-tensor implementation (null: torch picks)",
        nullable=True,
        optional=True,
        addable=True,
    ),
    Key(
        "optim.optimizer.fused",
        "bool",
        "torch's fused implementation (null: torch picks)",
        nullable=True,
        optional=True,
        addable=True,
    ),
    Key("optim.optimizer.capturable", "bool", "Adam: safe to capture in a CUDA graph", optional=True, addable=True),
    Key("optim.optimizer.differentiable", "bool", "autograd through the optimiser step", optional=True, addable=True),
    Key(
        "optim.schedule.name",
        "choice",
        "learning-rate schedule: step multiplies it by gamma at each milestone, cosine falls to 0",
        choices=SCHEDULES,
    ),
    Key(
        "optim.schedule.milestones",
        "steps",
        "where the step schedule multiplies the rate by gamma",
        nullable=True,
        example="[80ep, 120ep]",
        also="each before train.steps",
    ),
    Key("optim.schedule.gamma", "number > 0", "the step schedule's factor"),
    Key("optim.schedule.warmup", "step >= 0", "linear warm-up length (0it: none)", also="at most train.steps"),
    # -- dataset ----------------------------------------------------------------------------------------------
    Key("dataset.name", "str", "the dataset's name (image_folder: its folder under paths.data_dir)"),
    Key("dataset.channels", "int >= 1", "image channels", also="the dataset's own; image_folder: 1 or 3"),
    Key(
        "dataset.image_size",
        "int >= 1",
        "image side in pixels (image_folder: images are resized to it)",
        also="the dataset's own (image_folder: any)",
    ),
    Key(
        "dataset.num_classes",
        "int >= 2",
        "classes (image_folder: its class folders, counted)",
        also="the dataset's own (image_folder: any)",
    ),
    Key(
        "dataset.val_size",
        "int >= 1",
        "training images held out for validation (the early-stop point)",
        also="fewer than the training images",
    ),
    Key(
        "dataset.mean",
        "numbers",
        "per-channel mean taken off the inputs (null: the training split's)",
        nullable=True,
        also="one per channel",
    ),
    Key(
        "dataset.std",
        "numbers > 0",
        "per-channel deviation the inputs are divided by (null: the training split's)",
        nullable=True,
        also="one per channel",
    ),
    Key(
        "dataset.augment",
        "mapping",
        "augmentation of the training images (null: none)",
        closed=True,
        nullable=True,
        example="{crop_padding: 4, flip: true}",
    ),
    Key(
        "dataset.augment.crop_padding",
        "int >= 0",
        "pad each side by this many pixels, crop back at random (0: off)",
        nullable=True,
        optional=True,
        where="dataset=cifar10",
    ),
    Key(
        "dataset.augment.flip",
        "bool",
        "flip horizontally with probability 1/2",
        nullable=True,
        optional=True,
        where="dataset=cifar10",
    ),
    Key(
        "dataset.loader",
        "choice",
        "memory: splits on the training device, batches by index; torchvision: a DataLoader",
        choices=LOADERS,
    ),
    Key("dataset.num_workers", "int >= 0", "DataLoader worker processes (loader=torchvision only)", run_only=True),
    Key("dataset.source.download", "bool", "download the files when they are missing", optional=True, run_only=True),
    Key(
        "dataset.source.train_size",
        "int >= 2",
        "generated training images (before the validation split)",
        optional=True,
        where="dataset=synthetic",
    ),
    Key("dataset.source.test_size", "int >= 1", "generated test images", optional=True, where="dataset=synthetic"),
    Key(
        "dataset.source.digits",
        "numbers [0, 9]",
        "the digits of this task of split MNIST; labels are their positions in the list",
        optional=True,
        where="dataset=mnist_split",
        also="two or more different integers; as many as dataset.num_classes",
        example="[5, 6, 7, 8, 9]",
    ),
    # -- model ------------------------------------------------------------------------------------------------
    Key("model.name", "str", "the model's name (set by model=; its own keys are in `conf/model/<name>.yaml`)"),
    Key(
        "model.weights",
        "path",
        "pre-trained weights: a local file or folder; the rewind point init is them (nothing is downloaded)",
        nullable=True,
        optional=True,  # a model config of the user's own may lack it (+model.weights= adds it), an old run's too
        allowed_text="null, or a local state_dict / .safetensors file or a save_pretrained folder",
        custom=_CHECKED_BY_TRANSFER,
        also="the output layer may differ (a new head keeps its initialisation)",
    ),
    # -- trainer: Lightning Trainer arguments; any other the loop does not own with +trainer.<name>=... -------
    Key(
        "trainer.gradient_clip_val",
        "number > 0",
        "clip gradients to this norm (of the surviving weights) or value",
        nullable=True,
    ),
    Key(
        "trainer.gradient_clip_algorithm",
        "choice",
        "how gradients are clipped (null: norm)",
        choices=("norm", "value"),
        nullable=True,
    ),
    Key(
        "trainer.accumulate_grad_batches",
        f"int [1, {MAX_ITERATIONS}]",
        "batches per optimiser step (an iteration is one step)",
        nullable=True,
    ),
    Key(
        "trainer.deterministic", "bool", "true: deterministic algorithms only (slower; some ops refuse)", nullable=True
    ),
    # -- paths ------------------------------------------------------------------------------------------------
    Key(
        "paths",
        "group",
        "where data is read and results go",
        run_only=True,
        allowed_text="{options}",
        custom=_CHECKED_BY_VALIDATE,
    ),
    Key(
        "paths.data_dir",
        "path",
        "datasets are read from (and downloaded into) this folder",
        custom=_CHECKED_BY_VALIDATE,
        also="not a file",
    ),
    Key(
        "paths.output_dir",
        "path",
        "run folders go to `<output_dir>/runs/<run_id>`, sweeps to `<output_dir>/multirun`",
        custom="lth.config.validate.check_output_folder",
        also="one that can be made and written",
    ),
    # -- logger -----------------------------------------------------------------------------------------------
    Key(
        "logger",
        "group",
        "step-metric loggers (rounds.csv and summary.json are written whatever the logger)",
        run_only=True,
        nullable=True,
        allowed_text="{options}, a list of them, or null",
    ),
    Key(
        "logger.wandb.mode",
        "choice",
        "null: online if an API key is configured, else offline",
        choices=WANDB_MODES,
        nullable=True,
        optional=True,
        where="logger=wandb",
    ),
    Key(
        "logger.wandb.init_timeout",
        "number > 0",
        "seconds to reach the W&B server; past them the run logs offline",
        nullable=True,
        optional=True,
        where="logger=wandb",
    ),
    Key("logger.wandb.project", "str", "the W&B project the run goes to", optional=True, where="logger=wandb"),
    Key(
        "logger.mlflow.experiment_name",
        "str",
        "the MLflow experiment the run goes to",
        optional=True,
        where="logger=mlflow",
    ),
    Key(
        "logger.mlflow.tracking_uri",
        "str",
        "null: the run folder's store (sqlite:///<run>/logs/mlflow.db); else a server or store URI",
        nullable=True,
        allowed_text="null, or a URI (http://host:5000, sqlite:///path)",
        optional=True,
        where="logger=mlflow",
    ),
    # -- hardware: run-only, but processes and precision enter the identity (lth.config.validate.training_hardware) --
    Key(
        "hardware",
        "group",
        "where it trains; run-only but for world_size and precision (see below)",
        run_only=True,
        allowed_text="{options}",
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.accelerator",
        "choice",
        "auto: one GPU if there is one, else the CPU",
        choices=ACCELERATORS,
        custom=_CHECKED_BY_HARDWARE,
        also="gpu, cuda, mps: this machine has one",
    ),
    Key(
        "hardware.devices",
        "int",
        "devices per node, one process each (several: DDP)",
        custom=_CHECKED_BY_HARDWARE,
        allowed_text="a positive integer, -1 or auto (all), or GPU indices such as [0,1]",
        also="GPUs this machine has",
    ),
    Key(
        "hardware.num_nodes",
        "int >= 1",
        "machines, each running hardware.devices processes",
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.strategy",
        "choice",
        "Lightning's strategy (auto: ddp for several devices)",
        choices=STRATEGIES,
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.precision",
        "choice",
        "numeric precision",
        choices=PRECISIONS,
        custom=_CHECKED_BY_HARDWARE,
        also="transformer-engine*: with its package",
    ),
    Key(
        "hardware.threads",
        "int >= 1",
        "torch CPU threads per process (null: torch's default)",
        nullable=True,
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.rank_report",
        "bool",
        "each rank writes `<run>/ranks/rank_<r>.jsonl`: fingerprints of its state",
        custom=_CHECKED_BY_HARDWARE,
    ),
)
