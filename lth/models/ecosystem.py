"""Models from other libraries, by name: ``model=torchvision``, ``model=timm`` and ``model=hf`` (transformers).

Each builder takes the dataset's shape as the zoo's models do (``in_channels``, ``image_size``, ``num_classes``) and
hands it to the library through the library's own arguments: torchvision's ``num_classes`` (and ``image_size`` where
the model class has one), timm's ``num_classes``, ``in_chans`` and ``img_size``, a transformers config's
``num_labels``, ``num_channels`` and ``image_size``. Further keys of the model config go to the library as they are.
A model that cannot take the images (or is unknown, or its library is missing) is one line naming ``model``:
:func:`check_images` passes one blank image through it and checks the shape of what comes out.

Nothing is downloaded: pre-trained weights come from a local file with ``model.weights`` (:mod:`lth.models.weights`).
The libraries are imported only when such a model is built, so ``lth`` imports without them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from lth.core.errors import first_line
from lth.models.common import refuse


def _library(name: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        refuse(f"needs the {name} package, which is not installed: pip install 'lth[{extra}]'")


def check_images(model: nn.Module, in_channels: int, image_size: int, num_classes: int, what: str) -> nn.Module:
    """Refuse ``model`` unless one blank ``in_channels`` x ``image_size``² image gives ``num_classes`` outputs.

    It runs in eval mode (no batch statistics are updated, no random numbers drawn) and leaves the mode as it was.
    """
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as error:
        refuse(f"{what} cannot take {in_channels}x{image_size}x{image_size} images ({first_line(error)})")
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        refuse(f"{what} gives {shape} for one image; a classifier of the dataset's classes gives (1, {num_classes})")
    return model


def _build(build: Callable[..., nn.Module], what: str, sized: Mapping[str, Any], **arguments: Any) -> nn.Module:
    """``build(**arguments, **sized)``, or without ``sized`` where the model class takes no such argument."""
    try:
        try:
            return build(**arguments, **sized)
        except TypeError as error:
            if not sized or not any(f"'{name}'" in str(error) for name in sized):
                raise
            return build(**arguments)
    except Exception as error:  # each library refuses in its own words and types
        refuse(f"{what} cannot be built with {dict(arguments, **sized)} ({first_line(error)})")


def torchvision_model(arch: str, in_channels: int, image_size: int, num_classes: int, **options: Any) -> nn.Module:
    """``torchvision.models.get_model(arch)`` for ``num_classes`` classes (``image_size`` where it takes one).

    torchvision's models take 3-channel images only (they have no argument for others).
    """
    models = _library("torchvision", "ecosystem").models
    names = models.list_models()
    if arch not in names:
        close = difflib.get_close_matches(str(arch), names, n=3)
        refuse(f"torchvision has no model {arch!r} (model.arch){'; did you mean ' + ', '.join(close) if close else ''}")
    if in_channels != 3:
        refuse(
            f"torchvision's {arch} takes 3-channel images and has no argument for {in_channels}; use a 3-channel "
            "dataset, or model=timm (in_chans)"
        )
    arguments = {"weights": None, "num_classes": num_classes, **options}
    model = _build(
        lambda **kw: models.get_model(arch, **kw), f"torchvision {arch}", {"image_size": image_size}, **arguments
    )
    return check_images(model, in_channels, image_size, num_classes, f"torchvision {arch}")


def timm_model(arch: str, in_channels: int, image_size: int, num_classes: int, **options: Any) -> nn.Module:
    """``timm.create_model(arch, num_classes=, in_chans=)`` (and ``img_size=`` where the model class takes it)."""
    timm = _library("timm", "ecosystem")
    if options.get("pretrained"):
        refuse("pretrained=true would download; save the weights once and pass model.weights=<file> instead")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=3)
        refuse(f"timm has no model {arch!r} (model.arch){'; did you mean ' + ', '.join(close) if close else ''}")
    arguments = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels, **options}
    model = _build(lambda **kw: timm.create_model(arch, **kw), f"timm {arch}", {"img_size": image_size}, **arguments)
    return check_images(model, in_channels, image_size, num_classes, f"timm {arch}")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Without transformers' "Loading weights" bars and its load report (which names a new head's reinitialised
    tensors; :func:`lth.models.weights.load_weights` checks the fit itself and refuses any other misfit)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class HuggingFace(nn.Module):
    """A transformers image classifier as a plain module: images in, logits out (the model is ``net``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits

    def lth_load_weights(self, path: str | Path) -> dict[str, torch.Tensor]:
        """The weights of a ``save_pretrained`` folder, read by transformers (which knows its own tensor names across
        versions), named as this module names them."""
        with torch.random.fork_rng(devices=[]), _quiet_transformers():  # it may draw a head it then discards
            try:
                loaded = type(self.net).from_pretrained(
                    str(path), config=self.net.config, ignore_mismatched_sizes=True, local_files_only=True
                )
            except Exception as error:
                refuse(f"model.weights {str(path)!r} cannot be read by transformers ({first_line(error)})")
        theirs = loaded.state_dict()
        own = self.net.state_dict()
        return {f"net.{k}": v for k, v in theirs.items() if k in own and v.shape == own[k].shape}


def hf_model(
    config: str | Mapping[str, Any], in_channels: int, image_size: int, num_classes: int, **options: Any
) -> nn.Module:
    """A transformers ``AutoModelForImageClassification`` from ``config``: a local folder (``config.json`` inside, as
    ``save_pretrained`` writes it), a ``.json`` file, or the config's keys (``model_type`` among them). ``options``
    set further config keys; ``num_labels``, ``num_channels`` and ``image_size`` come from the dataset."""
    transformers = _library("transformers", "ecosystem")
    try:
        if isinstance(config, str | Path):
            if not Path(config).exists():
                refuse(
                    f"model.config {str(config)!r} is not a local folder or file; nothing is downloaded at run time: "
                    "save it once with AutoModelForImageClassification.from_pretrained(name).save_pretrained(folder)"
                )
            found = transformers.AutoConfig.from_pretrained(str(config), local_files_only=True)
        else:
            arguments = dict(config)
            found = transformers.AutoConfig.for_model(arguments.pop("model_type", None), **arguments)
    except ValueError as error:
        refuse(f"model.config cannot be read ({first_line(error)})")
    for key, value in options.items():
        if not hasattr(found, key):
            refuse(f"{type(found).__name__} has no key {key!r}")
        setattr(found, key, value)
    found.num_labels = num_classes
    for key, value in (("num_channels", in_channels), ("image_size", image_size)):
        if hasattr(found, key):
            setattr(found, key, value)
    what = f"transformers {found.model_type}"
    try:
        net = transformers.AutoModelForImageClassification.from_config(found)
    except Exception as error:
        refuse(f"{what} is no image classifier ({first_line(error)})")
    return check_images(HuggingFace(net), in_channels, image_size, num_classes, what)
