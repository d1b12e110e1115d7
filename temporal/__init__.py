"""Stage two: temporal heads trained on cached frame embeddings, in seconds.

    from harx.temporal import fit, evaluate, compare, create_head, list_heads
    run = fit("lstm", features="kth.h5", seed=0)       # writes a run folder, returns RunResult
    evaluate(run.path)                                  # scores best.pt again
    compare("kth.h5", heads=("vote", "lstm"), seeds=3)  # mean ± std over seeds
    Predictor(run.path).predict(["clip.mp4"])           # new videos: label, top-k, timeline

Heads (``list_heads()``): ``vote`` (per-frame classifier + vote), ``lstm``, ``gru``, ``meanpool``.
Adding one: a family file in ``heads/`` defining a :class:`~temporal.base.TemporalHead` subclass and
an ``@register_head`` entrypoint, plus its import in ``heads/__init__.py``.
"""

from . import heads  # noqa: F401  (registers every head before anything looks one up)
from . import fusion  # noqa: F401  (registers late fusion, which checkpoints may name)
from .base import TemporalHead
from .compare import CompareResult, compare
from .errors import NotFittedError, RunFolderError
from .registry import HEADS, create_head, head_options, list_heads, register_head
from .predict import Predictor, VideoPrediction, find_videos
from .run import RunResult, default_run_dir, evaluate, fit, resolve_features
from .runs import RunRow, list_runs
from .sequences import Sequences
from .training import EpochInfo

__all__ = ["CompareResult", "EpochInfo", "HEADS", "NotFittedError", "Predictor", "RunFolderError", "RunResult",
           "RunRow", "Sequences", "TemporalHead", "VideoPrediction", "compare", "create_head", "default_run_dir", "evaluate",
           "find_videos", "fit", "head_options", "list_heads", "list_runs", "register_head",
           "resolve_features"]
