"""``hydra/launcher=stacked``: a sweep's jobs trained in this process as the members of stacked networks
(``train.engine=stacked``, :mod:`lth.run.stack`), ``hydra.launcher.size`` members a stack at most.

Every job is composed as Hydra composes it, with ``train.engine=stacked`` added; what does not stack is refused in
one line naming the key (exit 2) before any job folder is made. Then each job gets its folder through Hydra's
``run_job`` (its ``.hydra/`` record and ``train.log``, as under the basic launcher), the jobs that can share a
stack are trained together, and each job's return value is its sparsest round's test accuracy, as ``train.py``'s.
A job whose round diverges ends as under the basic launcher (its number and overrides, then ``train.py``'s line,
exit 3), once every other job has trained to its end.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import read_write

from lth.config.entry import load_run, plain_config
from lth.config.run import RunConfig
from lth.core.errors import ConfigError
from lth.state.artifacts import remove_run_folder, unmake_sweep_folder
from lth.state.locks import BUSY, BusyError

BAD_CONFIG, DIVERGED = 2, 3  # train.py's exit codes of a refused config and a diverged round
ENGINE = "train.engine=stacked"


class StackedLauncher(Launcher):
    """Trains a sweep's jobs as stacks of at most ``size`` members, in this process."""

    COMPOSES_IN_TURN = True  # its jobs are composed one after another in this process (lth.tools.sweeper)

    def __init__(self, size: int = 32) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            print(f"error: hydra.launcher.size: got {size!r}; allowed: an integer >= 1", file=sys.stderr)
            sys.exit(BAD_CONFIG)
        self.size = size
        self.config: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: Any) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        output_dir = Path(str(self.config.paths.output_dir))
        try:
            composed = [self._compose(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        except ConfigError as error:
            unmake_sweep_folder(Path(str(self.config.hydra.sweep.dir)), output_dir)
            _fail(f"error: {error}", BAD_CONFIG)
        returns = []
        for config in composed:  # each job's folder, as Hydra makes it for any job
            returns.append(self._job_folder(config))
            if returns[-1].status != JobStatus.COMPLETED:  # refused: no folder of the sweep is left behind
                for ret in returns:
                    remove_run_folder(Path(str(ret.hydra_cfg.hydra.runtime.output_dir)), output_dir)
                unmake_sweep_folder(Path(str(self.config.hydra.sweep.dir)), output_dir)
                _fail(f"error: {returns[-1]._return_value}", BAD_CONFIG)
        runs = [r.return_value for r in returns]
        from lth.run.rounds import RunError  # torch: imported once there is something to train, not at Hydra's start
        from lth.run.signals import Interrupted, exit_stopped
        from lth.run.stack import Diverged, train_stack

        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # the stack logs to the console
        try:
            summaries = train_stack(runs, [Path(str(r.job.output_dir)) for r in runs], self.size)
        except Interrupted as stop:  # one line: what stopped it and the command that continues the sweep
            exit_stopped(stop, runs[0].job, True)
        except Diverged as diverged:  # the others are done; each diverged job as the basic launcher reports one
            for index, error in diverged.failures.items():
                print(f"#{initial_job_idx + index} : {' '.join(returns[index].overrides)}", file=sys.stderr)
                print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(DIVERGED)
        except (ConfigError, RunError, BusyError) as error:
            for run in runs:
                remove_run_folder(Path(str(run.job.output_dir)), output_dir)
            code = BAD_CONFIG if isinstance(error, ConfigError) else DIVERGED if isinstance(error, RunError) else BUSY
            _fail(f"error: {error}", code)
        for ret, summary in zip(returns, summaries, strict=True):
            ret.return_value = summary["rounds"][-1]["test_acc"]
        return returns

    def _compose(self, overrides: list[str], index: int) -> Any:
        """The job's config with ``train.engine=stacked``, refused in one line if it does not stack."""
        assert self.config is not None and self.hydra_context is not None
        for override in overrides:
            key, _, value = override.lstrip("+~").partition("=")
            if key == "train.engine" and value != "stacked":
                raise ConfigError("train.engine", f"got {value}; hydra/launcher=stacked trains with stacked")
        config = self.hydra_context.config_loader.load_sweep_config(self.config, [*overrides, ENGINE])
        with read_write(config.hydra):
            config.hydra.job.id = index
            config.hydra.job.num = index
        from lth.run.stack import check_stackable  # torch (see launch)

        check_stackable(RunConfig.of(plain_config(config)))
        return config

    def _job_folder(self, config: Any) -> JobReturn:
        """Make the job's folder as Hydra does for any job; its return value is the job's typed config."""
        assert self.hydra_context is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=_typed,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


def _typed(cfg: Any) -> Any:
    """A job's config validated and typed (with what Hydra knows of the job: its folder, its swept keys, and the
    command line as typed, which train.py left in ``sys.argv``)."""
    return load_run(cfg, sys.argv[1:])


def _fail(line: str, code: int) -> None:
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)
