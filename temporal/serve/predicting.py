"""Predictions for the server: each run's model loaded once and shared, requests queued with a
bound.

A :class:`~harx.temporal.predict.Predictor` holds the backbone and the head; building one costs
seconds and hundreds of MB, so the server keeps the last few (``keep``) and every request for a
run uses the same one. Predictions run one at a time (``workers``, default 1: stage one already
uses every core) in a worker thread, so the event loop keeps serving pages; at most ``queue``
more wait, and a request beyond that is answered at once with 503 instead of piling up memory.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

from harx.features.errors import HarxError


class BusyError(HarxError):
    """More requests wait than the queue allows (answered with 503)."""

    status = 503


class PredictionService:
    def __init__(self, *, workers: int = 1, queue: int = 32, keep: int = 2, device: str = "auto"):
        self.workers, self.queue, self.keep, self.device = max(1, workers), max(0, queue), max(1, keep), device
        self._slots = asyncio.Semaphore(self.workers)
        self._waiting = 0
        self._predictors: OrderedDict[str, object] = OrderedDict()
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # predictor -> its lock
        self._lock = threading.Lock()

    def predictor(self, run_dir: Path):
        """The shared Predictor of a run folder (built on first use)."""
        from harx.temporal.predict import Predictor

        key = str(Path(run_dir).resolve())
        with self._lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
            predictor = Predictor(run_dir, device=self.device)
            self._predictors[key] = predictor
            while len(self._predictors) > self.keep:
                self._predictors.popitem(last=False)
            return predictor

    def lock(self, predictor) -> threading.Lock:
        """Held while a thread uses ``predictor``: a head moves between devices and sets torch's
        thread count as it runs, so two calls on one predictor must not overlap (uploads and
        live sessions on the same run take turns)."""
        with self._lock:
            return self._locks.setdefault(predictor, threading.Lock())

    async def run(self, fn, *args):
        """``fn(*args)`` in a worker thread once a slot is free; BusyError when the queue is full."""
        if self._waiting >= self.workers + self.queue:
            raise BusyError(f"the server is busy ({self._waiting} request(s) in progress or waiting); try again")
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._waiting -= 1

    @property
    def pending(self) -> int:
        return self._waiting
