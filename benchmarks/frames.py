"""Accuracy against cost: how many frames, at what input size, does recognition need?

    python benchmarks/frames.py [--root ../shared/realdata/kth_walk_run] [--home DIR]
                                [--sizes 224,160,112] [--every 1,2,4] [--seeds 3] [--heads vote,lstm]

For each backbone input size (``harx extract --input-size``; 224 is lite0's own, KTH's frames are
160x120) and each frame step (``--every``), this extracts the real KTH clips under ``--root`` with
both streams (rgb and motion, harx's defaults otherwise: lite0, packaged ImageNet weights,
precision auto, official person split) into ``HOME/kth-in<size>-every<k>.h5``, timing the
extraction, then runs ``harx compare`` on the cache (each stream alone and late-fused, seeds
``0..--seeds-1``, epochs and fusion weights chosen on val, test scored once).

Cost is reported as **video frames per second**: the frames of video the samples span (sum of
their frame ranges) over the extraction's wall time (model loading excluded), so a step of 2 that
embeds half the rows covers twice the video per second. Extractions run one after another on this
machine; other processes change every rate. Caches and runs are kept under ``--home``: a rerun
only prints (finished runs are reused, finished caches confirmed without a model).

Prints a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "realdata" / "kth_walk_run"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def extract(root: Path, out: Path, size: int, every: int) -> dict:
    from harx.extract import make_config, run_extract
    from harx.features import FeatureStore

    summary = run_extract(make_config(dataset="kth", root=root, out=out, every=every,
                                      input_size=None if size == 224 else size))
    with FeatureStore(out) as store:
        span = int((store.column("range_stop") - store.column("range_start")).sum())
        rows = int(store.attrs["n_frames"])
    seconds = summary.seconds
    return {"cache": str(out), "rows": rows, "video_frames": span, "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds, 1) if seconds else None,
            "video_frames_per_s": round(span / seconds, 1) if seconds else None,
            "reused": summary.nothing_to_do, "precision": summary.precision or None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "harx-frames")
    p.add_argument("--sizes", default="224,160,112")
    p.add_argument("--every", default="1,2,4")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--heads", default="vote,lstm")
    args = p.parse_args(argv)
    if not (args.root / "00sequences.txt").is_file():
        p.error(f"{args.root} holds no KTH clips with 00sequences.txt")
    os.environ.setdefault("HARX_HOME", str(args.home))
    args.home.mkdir(parents=True, exist_ok=True)
    from harx.temporal import compare

    heads = [h for h in args.heads.split(",") if h]
    rows = []
    for size in (int(v) for v in args.sizes.split(",")):
        for every in (int(v) for v in args.every.split(",")):
            out = args.home / f"kth-in{size}-every{every}.h5"
            cost_file = out.with_suffix(".cost.json")
            t = time.perf_counter()
            cost = json.loads(cost_file.read_text()) if out.is_file() and cost_file.is_file() else None
            if cost is None:
                cost = extract(args.root, out, size, every)
                cost_file.write_text(json.dumps(cost))
            log(f"size {size} every {every}: {cost['rows']} rows, {cost['video_frames_per_s']} video frames/s "
                f"({time.perf_counter() - t:.0f} s)")
            result = compare(out, heads=heads, seeds=args.seeds, out=args.home / f"compare-in{size}-every{every}")
            acc = {}
            for column, res in result.results.items():
                test = res["test"]
                acc[column] = {"subsequence": [test["accuracy"]["mean"], test["accuracy"]["std"]],
                               "video": [test["video"]["accuracy"]["mean"], test["video"]["accuracy"]["std"]]}
            rows.append({"input_size": size, "every": every, **cost, "test": acc})
            log(f"  compared in {time.perf_counter() - t:.0f} s")

    def cell(row, column, unit="subsequence"):
        mean, std = row["test"][column][unit]
        return f"{100 * mean:.1f} ± {100 * std:.1f}"

    print(f"| input | every | rows | video frames/s | " + " | ".join(
        f"{h} {s}" for s in ("rgb", "motion", "rgb+motion") for h in heads) + " | LSTM rgb+motion, video |")
    print("|---|---|---|---|" + "---|" * (3 * len(heads) + 1))
    for row in rows:
        cells = [cell(row, f"{h}-{s}") for s in ("rgb", "motion", "rgb+motion") for h in heads]
        video = cell(row, "lstm-rgb+motion", "video") if "lstm" in heads else ""
        print(f"| {row['input_size']} | {row['every']} | {row['rows']} | {row['video_frames_per_s']} | "
              + " | ".join(cells) + f" | {video} |")
    print(json.dumps({"rows": rows, "root": str(args.root), "seeds": args.seeds, "heads": heads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
