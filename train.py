"""``python train.py [overrides]``: the command line checked before Hydra makes a folder (lth.config.command_line),
each job's config validated and typed once (lth.config.entry.load_run), then trained (lth.run.engine.train).
Exit codes: 2 a bad config, 3 a diverged round, 4 a full disk, 75 a run folder in use, 143/130 SIGTERM/SIGINT."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth.config.command_line import check_command_line
from lth.config.entry import load_run, process_rank, start_process
from lth.config.help import help_page
from lth.core.errors import ConfigError
from lth.state.artifacts import disk_full, remove_run_folder
from lth.state.locks import BUSY, BusyError

BAD_CONFIG, DIVERGED, DISK_FULL = 2, 3, 4  # and lth.state.locks.BUSY (75), lth.run.signals' 143 and 130
_COMMAND: tuple[int, list[str], bool] | None = None  # (pid, the command line as typed, its jobs checked)
start_process()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Validate and type this job's config, run IMP; return the sparsest round's test accuracy (a sweep's objective)."""
    job_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
    try:
        here = _COMMAND is not None and _COMMAND[0] == os.getpid()  # this process read the command line
        run = load_run(cfg, _COMMAND[1] if here else None, checked=here and _COMMAND[2])
    except ConfigError as error:
        fail(f"error: {error}", BAD_CONFIG, process_rank() == 0, (job_dir, str(cfg.paths.output_dir)))
    from lth.run.distributed import is_rank_zero
    from lth.run.engine import RunError, train
    from lth.run.signals import Interrupted, exit_stopped

    try:
        return train(run)["rounds"][-1]["test_acc"]
    except Interrupted as stop:  # SIGTERM, SIGINT: the checkpoint is written; one line says how to continue
        exit_stopped(stop, run.job, is_rank_zero())
    except ConfigError as error:  # under DDP every rank gets it; rank 0 says it and removes the empty folder
        fail(f"error: {error}", BAD_CONFIG, is_rank_zero(), (job_dir, run.output_dir))
    except (RunError, BusyError) as error:  # a diverged round (earlier ones kept); a folder in use (left alone)
        fail(f"error: {error}", DIVERGED if isinstance(error, RunError) else BUSY, is_rank_zero())
    except OSError as error:  # a full disk or quota (else raised again): every write is atomic, what was written whole
        fail(disk_full(error), DISK_FULL, is_rank_zero())


def fail(line: str, code: int, rank_zero: bool, folders: tuple[str | None, str] | None = None) -> NoReturn:
    """Exit with ``code`` after printing ``line`` (rank 0); with ``folders`` (the job's folder, the output folder),
    remove the run folder Hydra made and the folders it alone was in, unless it holds results."""
    if rank_zero:
        if folders and folders[0]:
            remove_run_folder(Path(folders[0]), Path(folders[1]))
        print(line, file=sys.stderr)
    sys.exit(code)


def cli(argv: list[str] | None = None) -> None:
    """``python train.py``: check the command line (every job of it), then hand it to Hydra."""
    global _COMMAND
    typed = list(sys.argv[1:] if argv is None else argv)
    try:
        command = check_command_line(typed)
        if {"-h", "--help"} & set(command.argv):  # this project's page (lth.config.help); Hydra's is --hydra-help
            return print(help_page([text for text in command.argv if not text.startswith("-")]), end="", flush=True)
    except ConfigError as error:
        fail(f"error: {error}", BAD_CONFIG, True)
    _COMMAND, sys.argv = (os.getpid(), typed, command.checked), [sys.argv[0], *command.argv]
    main()


if __name__ == "__main__":
    cli()
