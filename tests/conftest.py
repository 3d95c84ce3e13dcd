"""Shared fixtures: compose the real Hydra config (shrunk for speed) and run ``train.py`` as a user would.

``run_main(*args, cwd=...)`` runs the real entry point (``train.cli``: the command-line checks, then Hydra and
``main``) in this process, about 2 s a small run; ``run_train`` runs ``python train.py`` in a subprocess (about
15 s, Lightning's import alone 8-10 s), for the tests where the process is the point (signals, locks between
processes, DDP, an import that must not happen). Both return ``returncode``, ``stdout`` and ``stderr``.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lth.config.identity import register_resolvers
from lth.config.run import RunConfig

REPO = Path(__file__).resolve().parents[1]
FAST = ["dataset=synthetic", "train.steps=30it", "train.eval_every=10it", "prune.rounds=2", "logger=none"]
ENV = {"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"}  # what every run of train.py gets


# Every process the tests start imports this checkout's lth (``python -c``, a script, a launcher's workers), whatever
# lth is installed: a subprocess runs in another folder, or from scripts/, where the installed one would come first
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that runs ``train.py``: this one's, with :data:`ENV`."""
    return {**os.environ, **ENV, **extra}


# The tests' own process has 1 torch thread from its start, as ``python train.py`` gets in the tests: a module
# fixture (set up before any test's own fixtures) trains as the tests that compare with it do, bit for bit
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Each test starts and ends with 1 torch thread (2 xdist workers on 2 cores): a run with ``hardware.threads=2``
    leaves its threads neither to the tests nor to the next module's fixtures."""
    _one_thread()
    yield
    _one_thread()


def _one_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def shares_a_module_fixture(path: Path) -> bool:
    """Whether the test file ``path`` defines a module- (or class-, package-) scoped fixture."""
    try:
        return re.search(r"scope\s*=\s*[\"'](module|class|package)[\"']", path.read_text()) is not None
    except OSError:
        return False


class FileFixtureGroups:
    """``--dist loadgroup``, as xdist's own but with each file that defines a module fixture one group: every other
    test goes to whichever worker is free, and each file's module fixtures run once; the largest groups go first.
    (xdist 3.8 cannot group by ``xdist_group`` marks under pytest 9, which no longer lets it rename a test's node
    id; and its controller sees node ids only, so the files are known from their source.)"""

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        root, grouped = config.rootpath, {}

        class FileFixtureScheduling(LoadGroupScheduling):
            def _split_scope(self, nodeid: str) -> str:
                path = nodeid.split("::", 1)[0]
                if path not in grouped:
                    grouped[path] = shares_a_module_fixture(root / path)
                return path if grouped[path] else super()._split_scope(nodeid)

        return FileFixtureScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):  # its hook exists only with it
        config.pluginmanager.register(FileFixtureGroups(), "file-fixture-groups")


def pytest_collection_finish(session: pytest.Session) -> None:
    """The modules the tests imported (torch, Lightning, ...: millions of objects) are left out of the garbage
    collector's passes, and it runs less often: the runs in this process make many short-lived cyclic objects
    (every Hydra composition), and each full pass walked everything imported. Measured on a sweep of 8 jobs
    in-process: 10% less time."""
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


_COMPOSED: dict[tuple[str, ...], DictConfig] = {}  # make_cfg's compositions in this process, by their overrides


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides)``: the real config with FAST overrides, outputs under tmp_path unless the overrides name
    their own ``paths.output_dir``. Each list of overrides is composed once a process: later calls get a copy with
    this test's ``paths.output_dir`` set, as Hydra sets a value override after composing the defaults."""
    register_resolvers()

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        own = any(text.lstrip("+~").partition("=")[0] == "paths.output_dir" for text in overrides)
        texts = (*(FAST if fast else []), *overrides)
        if texts not in _COMPOSED:
            with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                _COMPOSED[texts] = compose("config", overrides=list(texts))
        cfg = copy.deepcopy(_COMPOSED[texts])
        if not own:
            cfg.paths.output_dir = str(tmp_path / "outputs")
        return cfg

    return make


def train(cfg: DictConfig, run_dir: Path | str | None = None) -> dict:
    """The run as ``train.py`` makes it, in this process: the composed config validated and typed once
    (:func:`lth.config.entry.load_run`), then :func:`lth.run.engine.train`."""
    from lth.config.entry import load_run
    from lth.run.engine import train as run

    return run(load_run(cfg), run_dir=run_dir)


def typed(cfg: DictConfig) -> RunConfig:
    """A composed config as the run has it, validated and typed, to build the run's objects from (the launch is not
    checked: a DDP config builds here as on each of its ranks)."""
    from lth.config.entry import plain_config
    from lth.config.validate import validate

    validate(cfg)
    return RunConfig.of(plain_config(cfg))


def run_folders(parent: Path) -> list[Path]:
    """The run folders under ``parent`` (those with a rounds.csv; not the shared dense store or lock files)."""
    return sorted(p.parent for p in parent.glob("*/rounds.csv"))


def run_train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py *args`` in a subprocess from ``cwd``, with 1 torch thread."""
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Finished:
    """What ``run_main`` gives: the fields of :class:`subprocess.CompletedProcess` that the tests read."""

    args: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = field(default="", repr=False)


class _Output(io.TextIOWrapper):
    """A captured stdout or stderr: a real file (it has a ``fileno``), not a terminal, read back as text."""

    def __init__(self) -> None:
        import tempfile

        super().__init__(tempfile.TemporaryFile(), encoding="utf-8", errors="replace", line_buffering=True)

    def text(self) -> str:
        self.flush()
        self.buffer.seek(0)
        return self.buffer.read().decode("utf-8", errors="replace")


# Python's own warning filters in a fresh process (``python -W`` unset): what a subprocess starts from
FRESH_PROCESS_FILTERS = [
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
]
CAUGHT_SIGNALS = [s for s in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGCONT") if hasattr(signal, s)]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Print a warning to stderr as a process does (pytest would otherwise record it and leave stderr empty)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_main(*args: str, cwd: Path, timeout: float | None = None) -> Finished:
    """``python train.py *args`` from ``cwd``, run in this process: ``train.cli(args)`` with what a fresh process
    would have (1 torch thread, the environment of :data:`ENV`, Python's warning filters, warnings and log lines
    printed), its exit code from ``SystemExit`` (an uncaught exception: 1 and its traceback on stderr) and its
    stdout and stderr captured. Everything a run changes in the process is put back: the working directory,
    ``sys.argv``, the environment, signal handlers, torch's threads, the logging config Hydra set up (its files
    closed), Hydra's global state, the warning filters. ``timeout`` is accepted for ``run_train``'s signature."""
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime

    import train as train_script

    saved_cwd, saved_argv, saved_environ = os.getcwd(), sys.argv[:], dict(os.environ)
    saved_threads, saved_command = torch.get_num_threads(), vars(train_script).get("_COMMAND")  # the line a stop prints
    saved_signals = {name: signal.getsignal(getattr(signal, name)) for name in CAUGHT_SIGNALS}
    saved_hydra_cfg, saved_job = HydraConfig.instance().cfg, JobRuntime.instance().conf
    saved_logging = _logging_state()
    saved_global_hydra = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()  # as a fresh process: no Hydra initialized (a test's own is put back after)
    out, err = _Output(), _Output()
    code = 0
    try:
        os.chdir(cwd)
        os.environ.update(ENV)
        os.environ["HYDRA_MAIN_MODULE"] = "__main__"  # Hydra finds conf/ beside train.py, as for the script
        torch.set_num_threads(1)
        sys.argv = [str(REPO / "train.py"), *args]
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            for action, category, module in reversed(FRESH_PROCESS_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            saved_streams = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = out, err
            try:
                train_script.cli(list(args))
            except SystemExit as stop:
                code = _exit_code(stop.code)
            except Exception:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout, sys.stderr = saved_streams
    finally:
        GlobalHydra.instance().clear()
        if saved_global_hydra is not None:
            GlobalHydra.instance().initialize(saved_global_hydra)
        HydraConfig.instance().cfg, JobRuntime.instance().conf = saved_hydra_cfg, saved_job
        _restore_logging(saved_logging)
        for name, handler in saved_signals.items():
            signal.signal(getattr(signal, name), handler if handler is not None else signal.SIG_DFL)
        torch.set_num_threads(saved_threads)
        if "_COMMAND" in vars(train_script):
            train_script._COMMAND = saved_command
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_environ)
        os.chdir(saved_cwd)
    result = Finished(list(args), code, out.text(), err.text())
    out.close()
    err.close()
    return result


def _exit_code(code: object) -> int:
    """The exit status of ``sys.exit(code)``: None is 0, a number itself, anything else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger()] + [
        x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)
    ]


def _logging_state() -> dict:
    """Every logger's handlers, level, propagation and disabled flag (Hydra's ``dictConfig`` changes them)."""
    return {
        "loggers": {x: (x.handlers[:], x.level, x.propagate, x.disabled) for x in _loggers()},
        "handlers": {ref() for ref in logging._handlerList} - {None},  # type: ignore[attr-defined]
    }


def _restore_logging(state: dict) -> None:
    """Put back what :func:`_logging_state` saw; close the handlers made since (Hydra's train.log files). A logger
    made since (a module imported by the run) keeps its level, as a later import would find it, but no handler."""
    made = [h for ref in logging._handlerList if (h := ref()) is not None and h not in state["handlers"]]  # type: ignore[attr-defined]
    for handler in made:
        handler.close()
    for logger in _loggers():
        if logger in state["loggers"]:
            handlers, level, propagate, disabled = state["loggers"][logger]
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
        else:
            logger.handlers[:] = [h for h in logger.handlers if h in state["handlers"]]
