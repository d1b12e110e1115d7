"""Where stage two keeps the features while it trains: in RAM, or in the cache on disk.

In RAM is the fast path: one contiguous array, indexed per batch (and sent to a GPU once). A
cache of spatial maps, or of a large dataset, can be many times the memory, so when the fold's
features would not fit comfortably, training reads each batch's rows from the cache instead
(:class:`~harx.temporal.sequences.StoredSequences`): memory then stays at a batch's worth, and
the numbers are the same to the bit on a CPU (``tests/test_streamed_training.py``; on a GPU,
cuDNN and atomic adds make even two fits in RAM differ in the last bits).

``auto`` keeps them in RAM when twice their size (a refit on train+val holds a second copy)
fits in half of the memory this process may still take: the least of available RAM, the room
under a cgroup limit and under ``ulimit -v``/``-d`` (:func:`harx.runtime.memory_available`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harx.features.errors import InvalidOptionError
from harx.runtime import memory_available

LOADS = ("auto", "memory", "disk")
#: share of the available memory that in-RAM features may take (with their refit copy)
RAM_SHARE = 0.5


@dataclass(frozen=True)
class Loading:
    """The choice (recorded in a run's metrics), and why (printed by ``harx fit``)."""

    in_memory: bool
    asked: str             # auto | memory | disk
    feature_bytes: int     # the fold's features (train, val and test) in RAM
    available_bytes: int
    limited_by: str

    @property
    def mode(self) -> str:
        return "memory" if self.in_memory else "disk"

    def describe(self) -> str:
        size = f"{_gb(self.feature_bytes)} of features"
        if self.asked != "auto":
            where = "in RAM" if self.in_memory else "read from the cache as training goes"
            return f"{size} {where} (--load {self.asked})"
        if self.in_memory:
            return f"{size} in RAM ({_gb(self.available_bytes)} available)"
        return (f"{size} read from the cache as training goes: in RAM they would take more than half of the "
                f"{_gb(self.available_bytes)} left under {self.limited_by}")

    def as_record(self) -> dict:
        """For metrics.json: the choice, not the host's free memory (two identical runs give
        identical metrics; :meth:`describe` says why, for the console)."""
        return {"features_in": self.mode, "asked": self.asked, "feature_bytes": self.feature_bytes}


def choose_loading(store, load: str = "auto") -> Loading:
    """Decide for selection ``store`` (a :class:`harx.features.StreamSelection`).

    Raises:
        InvalidOptionError: ``load`` is not auto, memory or disk.
    """
    if load not in LOADS:
        raise InvalidOptionError(f"--load must be one of {', '.join(LOADS)}, got {load!r}")
    need = store.nbytes(None)
    available, limited_by = memory_available()
    in_memory = load == "memory" or (load == "auto" and 2 * need <= RAM_SHARE * available)
    return Loading(in_memory, load, int(need), int(available), limited_by)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
