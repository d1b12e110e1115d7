"""How to store spatial maps: chunk size and compression against file size and training reads.

    python benchmarks/map_storage.py CACHE [--stream motion_map] [--rounds 3]

Copies one map stream of a harx cache (``harx extract --spatial``) into HDF5 files that differ
only in chunking (rows per chunk) and compression (none, lzf, gzip levels 1 and 4, each with
and without the shuffle filter), then times what stage two does with them: batches of 32 random
training crops of 32 consecutive rows (``FeatureStore.read_rows``' pattern: one slice per crop),
read cold from the file (a fresh h5py handle per round, the file in the page cache). Prints MB on
disk, crops per second and both as ratios to the unchunked-compression default, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

LAYOUTS = [("none", None, None, False), ("lzf", "lzf", None, False), ("lzf+shuffle", "lzf", None, True),
           ("gzip1", "gzip", 1, False), ("gzip1+shuffle", "gzip", 1, True), ("gzip4+shuffle", "gzip", 4, True)]


def write(data: np.ndarray, path: Path, rows: int, compression, level, shuffle) -> float:
    t = time.perf_counter()
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(rows, *data.shape[1:]), compression=compression,
                         compression_opts=level, shuffle=shuffle)
    return time.perf_counter() - t


def crops_per_second(path: Path, n_rows: int, rounds: int, crop: int = 32, batch: int = 32) -> float:
    rng = np.random.default_rng(0)
    done, spent = 0, 0.0
    for _ in range(rounds):
        with h5py.File(path, "r") as f:
            ds = f["x"]
            starts = np.sort(rng.integers(0, n_rows - crop, size=(20, batch)), axis=1)
            t = time.perf_counter()
            for b in starts:
                for s in b:
                    ds[int(s):int(s) + crop]
            spent += time.perf_counter() - t
            done += starts.size
    return done / spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--stream", default="motion_map")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with h5py.File(args.cache, "r") as f:
        data = f[f"streams/{args.stream}"][:]
    per_row = data[0].nbytes
    print(f"{args.stream}: {data.shape} {data.dtype}, {data.nbytes / 1e6:.1f} MB, {per_row} bytes per row", flush=True)
    result = {"stream": args.stream, "shape": list(data.shape), "bytes_per_row": per_row, "layouts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for kib in (128, 512, 2048):
            rows = max(1, kib * 1024 // per_row)
            for name, comp, level, shuffle in LAYOUTS:
                path = Path(tmp) / f"{name}-{kib}.h5"
                write_s = write(data, path, rows, comp, level, shuffle)
                size = os.path.getsize(path)
                speed = crops_per_second(path, len(data), args.rounds)
                key = f"{name}, {kib} KiB chunks ({rows} rows)"
                if base is None:
                    base = (size, speed)
                result["layouts"][key] = {"mb": round(size / 1e6, 1), "crops_per_s": round(speed),
                                          "size_vs_first": round(size / base[0], 3),
                                          "speed_vs_first": round(speed / base[1], 3), "write_s": round(write_s, 2)}
                print(f"{key:<40} {size / 1e6:8.1f} MB ({size / base[0]:.2f}x)  {speed:8.0f} crops/s "
                      f"({speed / base[1]:.2f}x)  written in {write_s:.1f} s", flush=True)
                path.unlink()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
