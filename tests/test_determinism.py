"""Same command, same numbers: a fit's result must not depend on what else runs on the machine.

torch's CPU kernels split their sums by thread, so gradients depend on the thread count; harx
trains on one count chosen from the CPUs it may use, never from the load
(:func:`harx.runtime.fixed_cpu_threads`). Each fit here runs in a fresh process with default
settings, as ``harx fit`` does, one of them beside a process that keeps a core busy.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harx.features.synthetic import make_synthetic_cache

CHILD = """
import sys
from harx.temporal import fit
fit("lstm", sys.argv[1], sys.argv[2], seed=7, epochs=12, patience=100)
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("det") / "small.h5", n_samples=120, embed_dim=64,
                                n_classes=4, mean_frames=24, max_frames=64, seed=5)


def _fit_in_a_process(cache: Path, out: Path, env_extra: dict | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_extra or {})
    subprocess.run([sys.executable, "-c", CHILD, str(cache), str(out)], check=True, env=env, timeout=300)


def _numbers(run: Path) -> tuple[dict, list[dict], dict]:
    """metrics.json and epochs.csv without timings, and best.pt's weights (its numbers to the
    bit: the files round what drifts apart in the last bits first)."""
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not k.endswith("seconds")}
        return [strip(v) for v in d] if isinstance(d, list) else d
    with open(run / "epochs.csv", newline="") as f:
        epochs = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
    weights = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["state"]
    return strip(json.loads((run / "metrics.json").read_text())), epochs, weights


def test_same_fit_beside_a_busy_process_gives_the_same_numbers(cache, tmp_path):
    _fit_in_a_process(cache, tmp_path / "quiet")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.5)          # long enough for a load-watching thread governor to notice it
        _fit_in_a_process(cache, tmp_path / "busy")
    finally:
        spinner.kill()
        spinner.wait()
    quiet, busy = _numbers(tmp_path / "quiet"), _numbers(tmp_path / "busy")
    assert quiet[1] == busy[1], "the epochs differ (epochs.csv)"
    assert quiet[0] == busy[0], "metrics.json differs"
    assert quiet[2].keys() == busy[2].keys()
    assert all(torch.equal(quiet[2][k], busy[2][k]) for k in quiet[2]), "best.pt's weights differ"
