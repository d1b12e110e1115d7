"""Spatial maps and the ConvLSTM head on real KTH persons never seen: accuracy against bytes.

    python benchmarks/maps.py [--root ../shared/realdata/kth_walk_run] [--home DIR] [--sizes 1,2,4,7] [--seeds 3]

1. ``harx extract --dataset kth --root ROOT --spatial --map-size 7`` (lite0, packaged ImageNet
   weights, every frame, streams rgb, motion and their maps; 7x7 is lite0's last-stage map at
   its 224 input, unpooled), into ``HOME/kth-maps7.h5``.
2. For each smaller size ``S`` of ``--sizes``, a cache ``HOME/kth-mapsS.h5`` with the same vector
   streams and the 7x7 maps average-pooled to ``S x S`` (``adaptive_avg_pool2d`` on the cached
   float16 maps; ``--map-size S`` at extraction pools the backbone's map before rounding to
   float16, a difference in the last bits).
3. ``harx compare`` on each cache, under KTH's official person split (train 11-18, val 01 04
   19-21 23-25, test 02 03 05-10 22; subsequences; epochs and fusion weights chosen on val; test
   scored once per seed): ``convlstm`` on rgb, motion and both (late fusion: maps of each), and
   with ``--heads vote,lstm,convlstm`` the vector heads too (on the first size's cache: the
   vectors are the same in every cache).

Prints one table (test accuracy per subsequence, mean ± std over seeds; map bytes per frame and
stream; fit seconds) and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "realdata" / "kth_walk_run"


def extract(root: Path, out: Path) -> float:
    from harx.extract import make_config, run_extract

    t = time.perf_counter()
    summary = run_extract(make_config(dataset="kth", root=root, out=out, spatial=True, map_size=7))
    print(f"extracted {summary.frames} frames now ({summary.samples_new} samples) into {out}", flush=True)
    return time.perf_counter() - t


def pooled_copy(src: Path, dst: Path, size: int) -> None:
    """``src`` with its map streams average-pooled to ``size x size``."""
    import torch
    import torch.nn.functional as F

    from harx.features import FeatureStore, FeatureWriter
    from harx.features.schema import StreamInfo, is_map_stream

    if dst.is_file():
        return
    store = FeatureStore(src)
    skip = {"format", "schema_version", "complete", "n_samples", "n_frames", "n_failed", "created_utc",
            "settings_fingerprint", "streams"}
    settings = {k: v for k, v in store.attrs.items() if k not in skip}
    infos = []
    for name in store.streams:
        info = store.stream_info(name)
        if is_map_stream(name):
            spec = dict(info.spec, map=dict(info.spec["map"], size=size))
            info = StreamInfo(name, spec, info.description.replace("7x7", f"{size}x{size}"),
                              (info.feature_shape[0], size, size))
        infos.append(info)
    with FeatureWriter(dst, settings, streams=infos) as writer:
        for rec in store.samples():
            feats = {}
            for name in store.streams:
                x = store.frames(rec.index, stream=name)
                if is_map_stream(name):
                    x = F.adaptive_avg_pool2d(torch.from_numpy(x).float(), size).to(torch.float16).numpy()
                feats[name] = x
            meta = {k: v for k, v in dataclasses.asdict(rec).items() if k not in ("index", "row_start", "row_stop")}
            writer.add_sample(meta, feats, store.frame_index(rec.index))
        writer.finalize(order=list(store.column("sample_id")))


def scores(result) -> dict:
    out = {}
    for column, r in result.results.items():
        test = r["test"]["accuracy"]
        out[column] = {"test_mean": test["mean"], "test_std": test["std"], "per_seed": test["values"],
                       "val_mean": r["val"]["accuracy"]["mean"] if r.get("val") else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--home", type=Path, default=Path("/tmp/harx-maps"))
    ap.add_argument("--sizes", default="1,2,4,7")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--heads", default="convlstm")
    args = ap.parse_args()
    from harx.temporal import compare

    args.home.mkdir(parents=True, exist_ok=True)
    full = args.home / "kth-maps7.h5"
    extract_s = extract(args.root, full)
    result: dict = {"extract_s": round(extract_s, 1), "sizes": {}}
    sizes = sorted(int(s) for s in args.sizes.split(","))
    for size in sizes:
        cache = full if size == 7 else args.home / f"kth-maps{size}.h5"
        pooled_copy(full, cache, size)
        from harx.features import FeatureStore

        store = FeatureStore(cache)
        bytes_per_frame = int(np.prod(store.stream_info("rgb_map").feature_shape)) * 2
        t = time.perf_counter()
        heads = args.heads if size == sizes[0] else "convlstm"
        cmp = compare(cache, heads=heads, seeds=args.seeds, streams="rgb,motion,rgb+motion",
                      out=args.home / f"compare-maps{size}")
        entry = {"map_bytes_per_frame_and_stream": bytes_per_frame, "compare_s": round(time.perf_counter() - t, 1),
                 "fit_s": {r.label: round(float(r.metrics["training"]["fit_seconds"]), 1) for r in cmp.runs
                           if r.seed == 0},
                 "scores": scores(cmp)}
        result["sizes"][size] = entry
        for column, s in entry["scores"].items():
            print(f"maps {size}x{size} ({bytes_per_frame / 1024:.1f} KB/frame/stream) {column:<32} test "
                  f"{100 * s['test_mean']:5.1f} ± {100 * s['test_std']:.1f} %  (val {100 * (s['val_mean'] or 0):.1f} %)",
                  flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
