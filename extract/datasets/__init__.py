"""Dataset adapters: a registry of what harx knows of each dataset, declared in its own file.

An adapter is a function ``(root, *, option=default, ...) -> DatasetIndex`` registered with
:func:`register_dataset`, which also takes the dataset's download source and which of its
options decide the cache's numbers (they enter the settings hash; a rerun with another value
is refused rather than mixed in). The registry key is the function name and the CLI word
(``harx extract --dataset kth``); its keyword options are ``harx extract -o NAME=VALUE``. A new
dataset is one adapter file plus its name in the import line at the bottom, as timm's model
families are one file each.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harx.features.errors import InvalidOptionError, UnknownNameError

from .base import SPLITS, DatasetIndex, DownloadSource, RemoteFile, VideoSample

_PARSERS: dict[str, tuple[Callable[[str], object], str]] = {
    "int": (int, "an integer"), "float": (float, "a number"), "str": (str, "text"), "Path": (Path, "a path")}


@dataclass(frozen=True)
class Dataset:
    """One registered dataset: its adapter, the options that enter the settings hash, its source."""

    name: str
    index: Callable[..., DatasetIndex]
    settings: tuple[str, ...] = ()
    source: DownloadSource | None = None

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.index) or "").split("\n")[0]

    @property
    def options(self) -> dict[str, inspect.Parameter]:
        """The adapter's keyword options (everything but ``root``), by name."""
        return {n: p for n, p in inspect.signature(self.index).parameters.items() if n != "root"}

    def parse_option(self, text: str) -> tuple[str, object]:
        """``"NAME=VALUE"`` -> ``(name, value)`` typed as the adapter declares it.

        Raises:
            InvalidOptionError: no ``=``, an option the adapter does not take, or a bad value.
        """
        name, sep, raw = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in self.options:
            raise InvalidOptionError(f"dataset {self.name} takes option(s) {self.describe_options() or 'none'}; "
                                     f"got {text!r} (write -o NAME=VALUE)")
        parse, what = _PARSERS.get(self._option_type(name), _PARSERS["str"])
        try:
            return name, parse(raw.strip())
        except ValueError:
            raise InvalidOptionError(f"dataset {self.name} option {name} takes {what}, got {raw!r}") from None

    def _option_type(self, name: str) -> str:
        """The name of option ``name``'s type (``int``, ``float``, ``str``, ``Path``), whether the
        adapter writes ``int | None``, ``Optional[int]`` or ``int``, with or without
        ``from __future__ import annotations``; ``str`` when it says nothing usable."""
        try:
            hint = typing.get_type_hints(self.index).get(name, str)
        except (NameError, TypeError):
            hint = self.options[name].annotation
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if args else hint
        if isinstance(hint, str):                       # an annotation get_type_hints could not resolve
            hint = re.sub(r"^(?:typing\.)?Optional\[(.+)\]$", r"\1", hint.strip()).split("|")[0].strip()
        return hint if isinstance(hint, str) else getattr(hint, "__name__", "str")

    def describe_options(self) -> str:
        return ", ".join(f"{n}={p.default}" for n, p in self.options.items())


DATASETS: dict[str, Dataset] = {}


def register_dataset(fn: Callable[..., DatasetIndex] | None = None, *, settings: tuple[str, ...] = (),
                     source: DownloadSource | None = None):
    """Register adapter ``fn`` under its own name; usable bare (``@register_dataset``) or with the
    options that decide the cache's numbers (``settings``) and its download ``source``."""
    def add(fn: Callable[..., DatasetIndex]) -> Callable[..., DatasetIndex]:
        if fn.__name__ in DATASETS:
            raise ValueError(f"dataset {fn.__name__!r} is registered twice")
        DATASETS[fn.__name__] = Dataset(fn.__name__, fn, tuple(settings), source)
        return fn

    return add(fn) if fn is not None else add


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def get_dataset(name: str) -> Dataset:
    """Raises UnknownNameError for a name not registered."""
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list_datasets())
    return DATASETS[name]


def create_dataset(name: str, root: str | Path | None = None, **options) -> DatasetIndex:
    """Index dataset ``name`` under ``root``. Options that are ``None`` keep the adapter's defaults.

    Raises:
        UnknownNameError: ``name`` is not registered.
        InvalidOptionError: an option the adapter does not take.
        DatasetNotFoundError: ``root`` or a required annotation file is missing.
    """
    dataset = get_dataset(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(dataset.options))
    if unknown:
        raise InvalidOptionError(f"dataset {name} does not take option(s) {', '.join(unknown)}; it takes "
                                 f"{dataset.describe_options() or 'none'}")
    return dataset.index(root=None if root is None else Path(root), **options)


__all__ = ["DATASETS", "SPLITS", "Dataset", "DatasetIndex", "DownloadSource", "RemoteFile", "VideoSample",
           "create_dataset", "get_dataset", "list_datasets", "register_dataset"]

# The registry: importing a family module registers its adapter (after register_dataset exists).
from . import folder, kth, demo, ucf101, ucf50, hmdb51  # noqa: E402,F401  isort: skip
