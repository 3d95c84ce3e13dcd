"""The classes a config names with ``_target_`` (the Trainer, the optimiser, callbacks, loggers, the model, the
dataset's source), checked before anything is written: each one importable, of the kind its place needs, given only
arguments it takes; and the Trainer's arguments against the Trainer's own annotations (types, and the values of the
enumerations Lightning knows, :data:`lth.config.trainer.TRAINER_CHOICES`).

This is the last check of :func:`lth.config.validate.validate`: it imports the classes named (torch and Lightning
with them), which every other check avoids, so that a bad value is refused before they load. The objects are built
later, in :mod:`lth.run.build`; what is checked here is what would otherwise be a traceback there.
"""

from __future__ import annotations

import collections.abc
import contextlib
import fnmatch
import inspect
import logging
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lth.config.trainer import NOT_PER_ROUND, TRAINER_CHOICES
from lth.core.errors import ConfigError, first_line

# Where a ``_target_`` may stand (fnmatch patterns of the node's dotted key), the class it must be or derive from
# (None: any class or function that builds the object), and whether the node's other keys are its arguments.
PLACES = (
    ("trainer", "pytorch_lightning.Trainer", False),  # its arguments: lth.config.trainer.check_trainer
    ("optim.optimizer", "torch.optim.Optimizer", True),
    ("callbacks.*", "pytorch_lightning.Callback", True),
    ("logger.*", "pytorch_lightning.loggers.Logger", True),
    ("model", None, False),  # a model also gets the dataset's shape arguments (lth.run.build.build_network)
    ("dataset.source", None, False),
)


def nodes_with_target(node: Any, key: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every mapping of ``node`` (outside Hydra's own) that has a ``_target_``, with its dotted key, outermost first."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node.keys():  # also a _target_ left ??? (model=custom without one)
        yield key, node
    for name in node:
        if key == "" and name == "hydra":
            continue
        if not OmegaConf.is_missing(node, name) and isinstance(node[name], DictConfig):
            yield from nodes_with_target(node[name], f"{key}.{name}" if key else str(name))


def check_targets(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a ``_target_`` that is missing or cannot be imported, a class of the
    wrong kind for its place, an argument it does not take, and a Trainer argument of the wrong type or value."""
    with _root_handled():
        _check_targets(cfg)


@contextlib.contextmanager
def _root_handled() -> Iterator[None]:
    """The root logger with a handler while the classes are imported: Lightning, imported before Hydra configures
    logging, would else give its loggers a console handler of their own and keep their lines from the run's
    ``train.log``."""
    root = logging.getLogger()
    placeholder = None if root.handlers else logging.NullHandler()
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        if placeholder is not None:
            root.removeHandler(placeholder)


def _check_targets(cfg: DictConfig) -> None:
    for key, node in nodes_with_target(cfg):
        depth = key.count(".")  # callbacks.* is a callback, not an object among its arguments
        place = next(
            (p for p in PLACES if fnmatch.fnmatchcase(key, p[0]) and p[0].count(".") == depth), (key, None, False)
        )
        built = _imported(key, node, place[1])
        if place[2]:
            _check_arguments(key, node, built)
        if key == "trainer":
            check_trainer_values(node, built)
        if key.startswith("callbacks."):
            _check_per_round(key, built)


def _check_per_round(key: str, callback: type) -> None:
    """Refuse a callback class that changes what a round is (:data:`~lth.config.trainer.NOT_PER_ROUND`)."""
    from hydra._internal.utils import _locate

    for name, why in NOT_PER_ROUND.items():
        if issubclass(callback, _locate(name)):
            raise ConfigError(key, f"{callback.__name__} is not allowed: {why}")


def _imported(key: str, node: DictConfig, base: str | None) -> Any:
    """The class (or function) ``node._target_`` names, of the kind ``base`` (a dotted class name) when given."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object's own, without its log line

    kind = f"a subclass of {base}" if base else "an importable class or function (package.module.Name)"
    named = key if key == "model" else f"{key}._target_"  # the model's errors name model, as building it does
    if OmegaConf.is_missing(node, "_target_"):
        raise ConfigError(named, f"{key}._target_ is not set; allowed: {kind}")
    target = node._target_
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(named, f"{key}._target_ is {target!r}; allowed: {kind}")
    try:
        built = _locate(target)
    except Exception as error:  # noqa: BLE001 - whatever importing the user's module raises, in one line
        why = first_line(error.__cause__ or error)
        raise ConfigError(named, f"cannot import {target!r} ({why}); allowed: {kind}") from None
    if not callable(built):
        raise ConfigError(named, f"{target!r} is not a class or function; allowed: {kind}")
    if base is not None and not (inspect.isclass(built) and issubclass(built, _locate(base))):
        raise ConfigError(named, f"{target!r} is not {kind}")
    return built


def _parameters(built: Any) -> Mapping[str, inspect.Parameter] | None:
    """The keyword parameters of ``built`` (a class: its constructor's), None when it takes any (``**kwargs``)."""
    try:
        parameters = inspect.signature(built).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): the constructor says what it takes
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return parameters


def _check_arguments(key: str, node: DictConfig, built: Any) -> None:
    """Every key of ``node`` but Hydra's own (``_target_``, ``_partial_``, ...) is an argument ``built`` takes."""
    parameters = _parameters(built)
    if parameters is None:
        return
    taken = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n != "self"]
    for name in node:
        if not str(name).startswith("_") and name not in taken:
            raise ConfigError(
                f"{key}.{name}", f"{built.__name__} takes no {name!r}; allowed: {', '.join(sorted(taken))}"
            )


def check_trainer_values(node: DictConfig, trainer: Any) -> None:
    """Each argument set under ``trainer`` (not null) against the annotation of ``trainer.__init__``, and for the
    enumerations of :data:`~lth.config.trainer.TRAINER_CHOICES` against their values."""
    try:
        hints = typing.get_type_hints(trainer.__init__)
    except Exception:  # noqa: BLE001 - annotations that cannot be resolved here: Lightning checks them itself
        hints = {}
    values = OmegaConf.to_container(node, resolve=True)
    for name, value in values.items():
        if str(name).startswith("_") or value is None or name not in hints:
            continue
        choices = TRAINER_CHOICES.get(name)
        if isinstance(value, str) and choices is not None:
            ok = value.lower() in choices
        else:
            ok = conforms(value, hints[name])
        if not ok:
            allowed = describe(hints[name], choices)
            raise ConfigError(f"trainer.{name}", f"got {value!r}; allowed: {allowed}")


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` (plain data from the config) is what the annotation ``hint`` allows; a mapping with a
    ``_target_`` (an object Hydra builds) stands for any class."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, member) for member in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (bool, int, float):
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return isinstance(value, bool) if hint is bool else numeric and (hint is float or isinstance(value, int))
    if isinstance(value, Mapping) and "_target_" in value:
        return True
    cls = origin or hint
    if not inspect.isclass(cls):
        return True  # a type variable, a protocol of its own: nothing to compare with
    if issubclass(cls, str):
        return isinstance(value, str)
    if issubclass(cls, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if issubclass(cls, collections.abc.Iterable) and isinstance(value, list):
        return True  # a list stands for any sequence (Hydra passes it as a ListConfig)
    return isinstance(value, cls)


def describe(hint: Any, choices: tuple[str, ...] | None = None) -> str:
    """What the annotation ``hint`` allows, in the words of the README (``choices``: the strings allowed)."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    words = []
    for member in members:
        if typing.get_origin(member) is typing.Literal:
            words += [str(v) for v in typing.get_args(member)]
        elif member is type(None):
            continue
        elif member is bool:
            words += ["true", "false"]
        elif member in (int, float):
            words.append("an integer" if member is int else "a number")
        elif member is str:
            words += list(choices) if choices else ["a string"]
        else:
            name = getattr(typing.get_origin(member) or member, "__name__", str(member))
            words.append(f"a {name} (_target_: its class)")
    words = list(dict.fromkeys(words))
    if type(None) in members:
        words.append("null")
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
