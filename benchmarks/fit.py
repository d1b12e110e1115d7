"""How long `harx fit lstm` and `harx fit vote` take on a KTH-sized cache, on this machine.

    python benchmarks/fit.py [--cache PATH] [--heads lstm,vote] [--load memory,disk] [--keep]

Builds (once; reused while its settings match) a synthetic cache the size of KTH's subsequence
protocol: 2,391 samples, about 95 frames each (24..400), 1,280-d float16 embeddings (580 MB),
6 classes, about 4 subsequences per video, split by person like KTH (8 train, 8 val, 9 test of
25 persons). Then, for each head, runs a fresh Python process doing what ``harx fit HEAD
--features CACHE`` does, and times it from process start to exit: interpreter start, imports,
reading the cache, training, scoring, and writing the run folder (plots included).

Each head runs once per ``--load``: ``memory`` (the features in RAM) and ``disk`` (read from the
cache batch by batch, as for a cache larger than RAM; :mod:`harx.temporal.loading`), and the two
give the same numbers, so they differ only in time and memory.

The last line printed is a JSON object: ``lstm_s`` and ``vote_s`` (wall seconds per process, in
memory), the in-process fit seconds, epochs, and the test accuracy of each run (to show the speed
is not bought with a useless model); per head and load, the mean epoch seconds and the process's
peak RSS, and ``<head>_disk_vs_memory_epoch``: the ratio of mean epoch times measured in this run
(goal <= 1.5). Targets on the 2-core CPU: lstm <= 60 s, vote <= 20 s.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


KTH_SIZE = dict(n_samples=2391, mean_frames=95, min_frames=24, max_frames=400, embed_dim=1280, n_classes=6,
                unit="subsequence", subsequences_per_video=4, n_groups=25, split_fractions=(8, 8, 9), seed=0,
                dataset="synthetic-kth-size")

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from harx.temporal import fit
r = fit({head!r}, {cache!r}, out={out!r}, seed=0, load={load!r})
m = r.metrics
epochs = [e["seconds"] for e in r.history]
print(json.dumps({{"fit_s": r.seconds, "epochs": m["training"]["epochs_run"], "best_epoch": m["training"]["best_epoch"],
                  "test_accuracy": m["test"]["accuracy"], "test_video_accuracy": m["test"]["video"]["accuracy"],
                  "after_imports_s": time.perf_counter() - t0, "epoch_s": sum(epochs) / len(epochs),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def build_cache(path: Path) -> tuple[Path, float]:
    from harx.features.errors import HarxError
    from harx.features.reader import FeatureStore
    from harx.features.synthetic import make_synthetic_cache

    if path.is_file():
        try:
            store = FeatureStore(path)
        except HarxError:
            store = None
        if store is not None:
            opts = store.attrs.get("dataset_options", {})
            noise = inspect.signature(make_synthetic_cache).parameters["noise"].default
            same = all(opts.get(k) == (list(v) if isinstance(v, tuple) else v)
                       for k, v in KTH_SIZE.items() if k in opts)
            if same and opts.get("noise") == noise and store.embed_dim == KTH_SIZE["embed_dim"]:
                return path, 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    make_synthetic_cache(path, **KTH_SIZE)
    return path, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "harx-bench" / "kth-size.h5")
    ap.add_argument("--heads", default="lstm,vote")
    ap.add_argument("--load", default="memory,disk", help="where the features stay: memory, disk, or both")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (default: deleted)")
    args = ap.parse_args()
    from harx.temporal.registry import list_heads

    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    loads = [x.strip() for x in args.load.split(",") if x.strip()]
    if not loads or set(loads) - {"memory", "disk"}:
        ap.error("--load: memory, disk or memory,disk")
    unknown = sorted(set(heads) - set(list_heads()))
    if not heads or unknown:
        ap.error(f"--heads: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(list_heads())}")

    cache, build_s = build_cache(args.cache)
    from harx.features.reader import FeatureStore
    store = FeatureStore(cache)
    lengths = store.column("row_stop") - store.column("row_start")
    print(f"cache {cache}: {len(store)} samples, {int(lengths.sum())} frames (mean {lengths.mean():.1f}, "
          f"{lengths.min()}..{lengths.max()}), {store.embed_dim}-d {store.attrs['dtype']}, "
          f"{cache.stat().st_size / 1e6:.0f} MB" + (f"; built in {build_s:.1f} s" if build_s else "; reused"),
          flush=True)
    runs = Path(tempfile.mkdtemp(prefix="harx-bench-runs-"))
    result: dict = {"cpu_count": os.cpu_count(), "samples": len(store), "frames": int(lengths.sum())}
    try:
        for head in heads:
            for load in loads:
                code = CHILD.format(head=head, cache=str(cache), out=str(runs / f"{head}-{load}"), load=load)
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                wall = time.perf_counter() - t
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"harx fit {head} --load {load} failed (exit {proc.returncode})")
                child = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{head} --load {load}: {wall:.1f} s wall ({child['fit_s']:.1f} s in fit), {child['epochs']} "
                      f"epochs (best {child['best_epoch']}) of {child['epoch_s']:.2f} s, peak RSS "
                      f"{child['peak_rss_mb']:.0f} MB, test accuracy {100 * child['test_accuracy']:.1f}% "
                      f"(per video {100 * child['test_video_accuracy']:.1f}%)", flush=True)
                key = head if load == loads[0] else f"{head}_{load}"
                result[f"{key}_s"] = round(wall, 2)
                result[f"{key}_fit_s"] = round(child["fit_s"], 2)
                result[f"{key}_epochs"] = child["epochs"]
                result[f"{key}_test_accuracy"] = round(child["test_accuracy"], 4)
                result[f"{head}_{load}_epoch_s"] = round(child["epoch_s"], 3)
                result[f"{head}_{load}_peak_rss_mb"] = round(child["peak_rss_mb"])
            if len(loads) == 2:
                ratio = result[f"{head}_disk_epoch_s"] / result[f"{head}_memory_epoch_s"]
                result[f"{head}_disk_vs_memory_epoch"] = round(ratio, 3)
                print(f"{head}: an epoch from disk takes {ratio:.2f}x the epoch in memory", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
        else:
            print(f"run folders kept in {runs}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
