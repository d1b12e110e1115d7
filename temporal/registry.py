"""The head registry: ``create_head("lstm", num_features, num_classes, hidden_size=256)``.

In the manner of timm's ``register_model``/``create_model``: a head family file in ``heads/``
(``vote.py``, ``recurrent.py``, ``meanpool.py``) defines its class and one small entrypoint function
per head, decorated with :func:`register_head`; the function's name is the head's public name (and
the CLI word: ``harx fit lstm``). This module imports no family (the families import it, and
``harx.temporal`` imports ``heads``), so imports go one way. Adding a head is one file plus one
import line in ``heads/__init__.py``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable

from harx.features.errors import InvalidOptionError, UnknownNameError

#: an entrypoint: ``fn(num_features, num_classes, **options)`` returning a ``TemporalHead``
#: (named, not imported: ``base`` imports this module, and imports go one way)
HeadFactory = Callable[..., object]

__all__ = ["COMPOSITES", "HEADS", "create_head", "head_options", "list_heads", "register_composite", "register_head"]

HEADS: dict[str, HeadFactory] = {}
#: heads made of other heads (``temporal.fusion.LateFusion``), by checkpoint name: built from
#: their own parameters, not offered as ``harx fit NAME``
COMPOSITES: dict[str, type] = {}


def register_composite(cls: type) -> type:
    """Register a head class made of other heads under its ``name`` (checkpoints name it)."""
    COMPOSITES[cls.name] = cls
    return cls


def register_head(fn: HeadFactory) -> HeadFactory:
    """Register ``fn(num_features, num_classes, **options) -> TemporalHead`` under ``fn.__name__``."""
    name = fn.__name__
    if name in HEADS and HEADS[name] is not fn:
        raise ValueError(f"head {name!r} is registered twice ({HEADS[name].__module__} and {fn.__module__})")
    HEADS[name] = fn
    return fn


def list_heads() -> list[str]:
    """Names of the registered heads, sorted."""
    return sorted(HEADS)


def head_options(name: str) -> dict:
    """The options of head ``name`` with their defaults (what ``create_head`` accepts as kwargs)."""
    head = create_head(name, 1, 2)
    return {k: v for k, v in head.get_params().items() if k not in ("num_features", "num_classes")}


def create_head(name: str, num_features: int, num_classes: int, **kwargs):
    """Build an unfitted head.

    Options given as ``None`` are dropped, so the head's own defaults apply (a CLI passes every
    option it has, ``None`` when the user did not set it).

    Raises:
        UnknownNameError: ``name`` is not a registered head.
        InvalidOptionError: an option the head does not have.
    """
    if name not in HEADS:
        raise UnknownNameError("head", name, sorted(HEADS))
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    fn = HEADS[name]
    head_cls = _returned_class(fn)
    if head_cls is not None:
        allowed = set(inspect.signature(head_cls.__init__).parameters) - {"self", "num_features", "num_classes"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise InvalidOptionError(f"head {name!r} has no option {', '.join(map(repr, unknown))}; its options: "
                                     f"{', '.join(sorted(allowed))}")
    return fn(num_features=int(num_features), num_classes=int(num_classes), **kwargs)


def _returned_class(fn) -> type | None:
    """The head class an entrypoint returns, from its return annotation (``-> LSTMHead``)."""
    try:
        cls = typing.get_type_hints(fn).get("return")
    except (NameError, TypeError):
        return None
    return cls if isinstance(cls, type) else None
