"""The classes a config names with ``_target_`` (the Trainer, the optimiser, callbacks, loggers, the model, the
dataset's source), checked before anything is written (:data:`PLACES`): each one set where the loop needs it,
importable, of the kind its place needs, with the ``_partial_`` the loop needs, given only arguments it takes
(by name) and values its annotations allow (the Trainer's enumerations Lightning knows too,
:data:`lth.config.trainer.TRAINER_CHOICES`); each callback is built once, and refused if it would change what a
round is (:data:`lth.config.trainer.NOT_PER_ROUND`).

This is the last check of :func:`lth.config.validate.validate`: it imports the classes named (torch and Lightning
with them), which every other check avoids, so that a bad value is refused before they load. The objects are built
later, in :mod:`lth.run.build`; what is checked here is what would otherwise be a traceback there, or a refusal
after the run folder holds files.
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
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lth.config.trainer import NOT_PER_ROUND, TRAINER_CHOICES
from lth.core.errors import ConfigError, first_line


@dataclass(frozen=True)
class Place:
    """Where a ``_target_`` may stand: ``pattern`` (fnmatch, of the node's dotted key); ``base``, the class it must
    be or derive from (None: any class or function that builds the object); whether the node's other keys must be
    arguments it takes (``names``) and their values what its annotations say (``values``); whether the node must
    have a ``_target_`` (``required``); and ``partial``: the ``_partial_`` the loop needs (it completes the call:
    the optimiser's parameters, the data folder), None where either works."""

    pattern: str
    base: str | None
    names: bool
    values: bool
    required: bool = True
    partial: bool | None = None


PLACES = (
    Place("trainer", "pytorch_lightning.Trainer", False, True),  # argument names: lth.config.trainer.check_trainer
    Place("optim.optimizer", "torch.optim.Optimizer", True, True, partial=True),
    Place("callbacks.*", "pytorch_lightning.Callback", True, True, required=False),  # check_trainer: a _target_
    Place("logger.*", "pytorch_lightning.loggers.Logger", True, True, required=False),  # wandb, mlflow: none
    Place("model", None, False, False, partial=False),  # it also gets the dataset's shape (lth.run.build)
    Place("dataset.source", None, True, False, partial=True),
)
ANYWHERE = Place("*", None, False, False, required=False)  # a _target_ among another's arguments


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
    wrong kind for its place or with the wrong ``_partial_``, an argument it does not take or of a value its
    annotation does not allow, and a callback that cannot be built or changes what a round is."""
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
    for place in PLACES:
        node = OmegaConf.select(cfg, place.pattern) if place.required else None
        if isinstance(node, DictConfig) and "_target_" not in node.keys():
            raise ConfigError(
                _named(place.pattern), f"{place.pattern}._target_ is not set; allowed: {_kind(place.base)}"
            )
    for key, node in nodes_with_target(cfg):
        depth = key.count(".")  # callbacks.* is a callback, not an object among its arguments
        place = next((p for p in PLACES if fnmatch.fnmatchcase(key, p.pattern) and p.pattern.count(".") == depth), None)
        place = place or ANYWHERE
        built = _imported(key, node, place.base)
        partial = node.get("_partial_", False)
        if place.partial is not None and partial is not place.partial:
            why = "the IMP loop completes the call" if place.partial else "it is built whole"
            got = str(partial).lower() if isinstance(partial, bool) else repr(partial)
            raise ConfigError(f"{key}._partial_", f"got {got}; allowed: {str(place.partial).lower()} ({why})")
        if place.names:
            _check_arguments(key, node, built)
        if place.values:
            check_values(key, node, built)
        if key.startswith("callbacks."):
            check_per_round(key, built)
            _build_once(key, node)


def _named(key: str) -> str:
    """The key an error about the ``_target_`` of ``key`` names: the model's name ``model``, as building it does."""
    return key if key == "model" else f"{key}._target_"


def _kind(base: str | None) -> str:
    return f"a subclass of {base}" if base else "an importable class or function (package.module.Name)"


def _build_once(key: str, node: DictConfig) -> None:
    """Build a callback once (each round builds its own later): one its constructor refuses is refused now,
    before the run folder holds anything."""
    from hydra.utils import instantiate

    try:
        instantiate(node)
    except Exception as error:  # noqa: BLE001 - whatever the user's class raises, in one line
        root = error
        while root.__cause__ is not None:
            root = root.__cause__
        raise ConfigError(key, f"cannot be built ({first_line(root)})") from None


def check_per_round(key: str, callback: type) -> None:
    """Refuse a callback class that changes what a round is (:data:`~lth.config.trainer.NOT_PER_ROUND`)."""
    from hydra._internal.utils import _locate

    for name, why in NOT_PER_ROUND.items():
        if issubclass(callback, _locate(name)):
            raise ConfigError(key, f"{callback.__name__} is not allowed: {why}")


def _imported(key: str, node: DictConfig, base: str | None) -> Any:
    """The class (or function) ``node._target_`` names, of the kind ``base`` (a dotted class name) when given."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object's own, without its log line

    kind = _kind(base)
    named = _named(key)
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


def _parameters(built: Any) -> tuple[Mapping[str, inspect.Parameter], bool]:
    """The parameters of ``built`` (a class: its constructor's) that may be given by name, and whether it takes
    any other (``**kwargs``, or a signature that cannot be read)."""
    try:
        parameters = inspect.signature(built).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): the constructor says what it takes
        return {}, True
    others = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_KEYWORD)
    named = {n: p for n, p in parameters.items() if p.kind not in others and n != "self"}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _check_arguments(key: str, node: DictConfig, built: Any) -> None:
    """Every key of ``node`` but Hydra's own (``_target_``, ``_partial_``, ...) is an argument ``built`` takes."""
    taken, takes_any = _parameters(built)
    if takes_any:
        return
    for name in node:
        if not str(name).startswith("_") and name not in taken:
            raise ConfigError(
                f"{key}.{name}", f"{built.__name__} takes no {name!r}; allowed: {', '.join(sorted(taken))}"
            )


def check_values(key: str, node: DictConfig, built: Any) -> None:
    """Each argument set under ``key`` (not null) against its annotation in ``built``'s signature (a class: its
    constructor's), and for the Trainer's enumerations (:data:`~lth.config.trainer.TRAINER_CHOICES`) against
    their values."""
    try:
        hints = typing.get_type_hints(built.__init__ if inspect.isclass(built) else built)
    except Exception:  # noqa: BLE001 - annotations that cannot be resolved here: the class checks its arguments
        hints = {}
    values = OmegaConf.to_container(node, resolve=True)
    for name, value in values.items():
        if str(name).startswith("_") or value is None or name not in hints:
            continue
        choices = TRAINER_CHOICES.get(name) if key == "trainer" else None
        if isinstance(value, str) and choices is not None:
            ok = value.lower() in choices
        else:
            ok = conforms(value, hints[name])
        if not ok:
            raise ConfigError(f"{key}.{name}", f"got {value!r}; allowed: {describe(hints[name], choices)}")


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
