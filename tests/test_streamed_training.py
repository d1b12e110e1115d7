"""Stage two on features left in the cache: the same numbers as in RAM, memory that stays at a
batch's worth on a cache several times larger than the budget, and the automatic choice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from harx.features import FeatureStore
from harx.features.errors import InvalidOptionError
from harx.temporal import fit
from harx.temporal.loading import choose_loading
from harx.temporal.sequences import StoredSequences, concat_sequences, feature_stats


def test_read_rows_gives_the_rows_asked_in_the_order_asked(two_streams):
    store = FeatureStore(two_streams)
    n = int(store.attrs["n_frames"])
    rows = np.random.default_rng(0).integers(0, n, size=(7, 13))
    rows[0, :4] = rows[0, 4]                                          # repeats, as padding makes them
    got = store.read_rows(rows, ["rgb", "motion"])
    with __import__("h5py").File(two_streams, "r") as f:
        whole = np.concatenate([f["streams/rgb"][:], f["streams/motion"][:]], axis=1)
    assert got.shape == (7, 13, 32) and got.dtype == np.float16
    np.testing.assert_array_equal(got, whole[rows])


def test_stored_samples_read_as_the_samples_in_ram(two_streams):
    sel = FeatureStore(two_streams).select(["rgb", "motion"])
    ram, y = sel.sequences("train")
    disk, y2 = sel.sequences("train", in_memory=False)
    assert isinstance(disk, StoredSequences) and ram.in_memory and np.array_equal(y, y2)
    assert len(disk) == len(ram) and np.array_equal(disk.offsets, ram.offsets) and disk.nbytes == ram.nbytes
    for i in (0, 5, len(ram) - 1):
        np.testing.assert_array_equal(disk[i], ram[i])
    np.testing.assert_array_equal(disk.to_memory().data, ram.data)
    shuffled = disk.take([3, 0, 1, 7, 2])                             # runs broken: one read per run
    for lo, hi in ((5, 137), (0, shuffled.n_frames), (11, 12), (40, 40)):
        np.testing.assert_array_equal(disk.block(lo, hi), ram.block(lo, hi))
        np.testing.assert_array_equal(shuffled.block(lo, min(hi, shuffled.n_frames)),
                                      ram.take([3, 0, 1, 7, 2]).block(lo, min(hi, shuffled.n_frames)))
    for a, b in zip(feature_stats(disk), feature_stats(ram, chunk=None)):
        np.testing.assert_array_equal(a, b)                           # the same blocks: the same sums
    np.testing.assert_array_equal(disk.columns(16, 32)[3], ram.columns(16, 32)[3])
    with pytest.raises(InvalidOptionError, match="whole streams"):
        disk.columns(8, 32)
    both = concat_sequences([disk, disk.take([2, 0])])
    assert isinstance(both, StoredSequences) and len(both) == len(disk) + 2
    np.testing.assert_array_equal(both[len(disk)], ram[2])


def _numbers(run) -> tuple[dict, dict]:
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not k.endswith("seconds") and k != "loading"}
        return [strip(v) for v in d] if isinstance(d, list) else d
    weights = torch.load(run.path / "best.pt", map_location="cpu", weights_only=True)["state"]
    text = (run.path / "metrics.json").read_text().replace(str(run.features), "CACHE")   # each load has its copy
    return strip(json.loads(text)), weights


def _same_state(a, b) -> bool:
    """Two checkpoint states equal to the bit (late fusion nests one state per stream)."""
    if isinstance(a, dict):       # timings aside
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a
                                                                    if "seconds" not in str(k))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, str) and ".h5" in a:      # the cache's path (each load trains on its own copy)
        return isinstance(b, str)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("head, options", [
    ("lstm", dict(epochs=3, streams="rgb")),
    ("vote", dict(epochs=2, streams="rgb+motion", fusion="early")),
    ("meanpool", dict(epochs=3, refit_trainval=True, streams="rgb")),
    ("meanpool", dict(epochs=3, streams="rgb+motion", fusion="late")),
])
def test_a_fit_from_disk_equals_the_fit_in_ram_to_the_bit(two_streams, tmp_path, head, options):
    runs = {}
    for load in ("memory", "disk"):      # a copy each: late fusion's stream runs go beside their cache
        cache = tmp_path / f"{load}.h5"
        shutil.copyfile(two_streams, cache)
        runs[load] = fit(head, cache, seed=3, load=load, out=tmp_path / load, **options)
        assert not runs[load].reused
    assert runs["memory"].metrics["training"]["loading"]["features_in"] == "memory"
    assert runs["disk"].metrics["training"]["loading"]["features_in"] == "disk"
    assert "read from the cache as training goes (--load disk)" in runs["disk"].loading
    (m_ram, w_ram), (m_disk, w_disk) = _numbers(runs["memory"]), _numbers(runs["disk"])
    assert m_ram == m_disk
    assert _same_state(w_ram, w_disk)


def test_auto_keeps_the_features_in_ram_only_when_they_fit(two_streams, monkeypatch):
    sel = FeatureStore(two_streams).select(["rgb", "motion"])
    need = sel.nbytes(None)
    monkeypatch.setattr("harx.temporal.loading.memory_available", lambda: (100 * need, "available RAM"))
    assert choose_loading(sel).in_memory
    monkeypatch.setattr("harx.temporal.loading.memory_available", lambda: (3 * need, "the cgroup's memory limit"))
    tight = choose_loading(sel)
    assert not tight.in_memory and "under the cgroup's memory limit" in tight.describe()
    assert choose_loading(sel, "memory").in_memory          # asked for: obeyed
    with pytest.raises(InvalidOptionError, match="--load must be one of auto, memory, disk"):
        choose_loading(sel, "ssd")


def test_the_address_space_limit_counts_as_memory_left():
    code = ("import resource; from harx.runtime import _read_kib, memory_available; "
            "size = _read_kib('/proc/self/status', 'VmSize:'); limit = size + (200 << 20); "
            "resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY)); print(memory_available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    left, why = eval(out.stdout)
    assert why == "the address-space limit (ulimit -v)" and 100 << 20 < left <= 200 << 20


BUDGET_MB = 128
CHILD = textwrap.dedent("""
    import json, sys
    import harx.temporal.loading as loading
    from harx.temporal import fit

    def kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])

    small, big, out, budget_mb = sys.argv[1:5]
    fit("lstm", small, seed=0, epochs=1, load="disk", out=out + "/warm", hidden_size=32)   # torch's one-time setup
    loading.memory_available = lambda: (int(budget_mb) << 20, "a test's budget")
    before = kib("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")                 # the peak starts again from here
    run = fit("lstm", big, seed=0, epochs=2, out=out + "/big", hidden_size=32)
    print(json.dumps({"before_kib": before, "peak_kib": kib("VmHWM:"), "loading": run.loading,
                      "features_in": run.metrics["training"]["loading"]["features_in"]}))
""")


def test_a_cache_larger_than_the_memory_budget_trains_within_it(tmp_path, small_cache):
    """``harx fit lstm`` on a cache four times the memory left to it: ``auto`` reads the
    features from disk, and the peak RSS grows by less than that memory (measured in a fresh
    process, after torch's one-time setup)."""
    from harx.features.synthetic import make_synthetic_cache

    big = make_synthetic_cache(tmp_path / "big.h5", n_samples=352, embed_dim=1024, n_classes=4, mean_frames=800,
                               min_frames=600, max_frames=1000, seed=1)
    size_mb = big.stat().st_size / 2 ** 20
    assert size_mb > 4 * BUDGET_MB
    done = subprocess.run([sys.executable, "-c", CHILD, str(small_cache), str(big), str(tmp_path), str(BUDGET_MB)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["features_in"] == "disk" and "left under a test's budget" in report["loading"]
    grew_mb = (report["peak_kib"] - report["before_kib"]) / 1024
    assert grew_mb < BUDGET_MB, f"peak RSS grew by {grew_mb:.0f} MB training on a {size_mb:.0f} MB cache"
