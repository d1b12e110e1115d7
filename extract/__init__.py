"""harx stage one: decode videos, embed frames with a pretrained CNN, write the feature cache.

Notebook use::

    from harx.extract import make_config, run_extract
    summary = run_extract(make_config(dataset="kth", root="data/kth"))

Attributes are imported lazily so that ``python -m extract.decode`` (the decoding worker) and
``harx --help`` do not pay for importing torch.
"""

from __future__ import annotations

_EXPORTS = {
    "run_extract": "harx.extract.pipeline", "ExtractSummary": "harx.extract.pipeline", "ExtractProgress": "harx.extract.pipeline",
    "ExtractConfig": "harx.extract.config", "make_config": "harx.extract.config",
    "create_backbone": "harx.extract.backbones", "create_dataset": "harx.extract.datasets", "list_datasets": "harx.extract.datasets",
    "Sampling": "harx.extract.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'extract' has no attribute {name!r}")
