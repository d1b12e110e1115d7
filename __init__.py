"""harx: human action recognition on cached CNN frame features.

The notebook API, in the order a session uses it::

    import harx
    summary = harx.run_extract(harx.make_config(dataset="demo"))   # stage one: the feature cache
    run = harx.fit("lstm", features=summary.out, seed=0)             # stage two: a run folder
    harx.compare(summary.out, heads=("vote", "lstm"), seeds=3)       # mean ± std over seeds
    harx.Predictor(run.path).predict(["clip.mp4"])                    # new videos

The repository's top-level folders are this package's subpackages: ``harx.extract`` (stage one),
``harx.features`` (the HDF5 store, the contract between the stages), ``harx.temporal`` (stage
two) and ``harx.cli`` (the ``harx`` command). Names are imported on first use, so that
``import harx`` and ``harx --help`` do not pay for importing torch.
"""

from __future__ import annotations

__version__ = "0.2.0"

_EXPORTS = {
    "run_extract": "harx.extract", "make_config": "harx.extract", "ExtractConfig": "harx.extract",
    "create_backbone": "harx.extract", "list_datasets": "harx.extract",
    "FeatureStore": "harx.features", "FeatureWriter": "harx.features",
    "fit": "harx.temporal", "evaluate": "harx.temporal", "compare": "harx.temporal",
    "create_head": "harx.temporal", "list_heads": "harx.temporal", "list_runs": "harx.temporal",
    "Predictor": "harx.temporal", "HarxError": "harx.features.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'harx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
