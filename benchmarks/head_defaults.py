"""Choose the tcn and transformer defaults by measurement, on val only, on a real cache.

    python benchmarks/head_defaults.py --features CACHE [--streams rgb] [--seeds 3] [--heads tcn,transformer]

For each head, a small grid of the options that decide its size and regularisation (below) is
fitted with seeds 0..N-1 on ``--streams`` of ``CACHE`` (each fit: epochs chosen on val by early
stopping, as ``harx fit`` does), and each configuration is ranked by its mean val accuracy,
ties broken by the mean val NLL (lower is better). Test accuracy is printed beside it for the
record but never used to choose. The few-videos case real sets have is what the grid is run on:
``../shared/realdata/kth_walk_run`` (128 training subsequences of 8 persons), where the stream
``rgb`` is the hard one (val is saturated on ``motion``).

Prints one table per head and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

GRIDS = {
    "tcn": {"channels": [64, 128, 256], "dropout": [0.1, 0.3, 0.5]},
    "transformer": {"d_model": [64, 128], "num_layers": [1, 2], "pooling": ["mean", "cls"]},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--streams", default="rgb")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--heads", default="tcn,transformer")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from harx.temporal import fit
    from harx.temporal.registry import head_options

    out = {}
    with tempfile.TemporaryDirectory(prefix="harx-head-defaults-") as tmp:
        for head in args.heads.split(","):
            grid = GRIDS[head]
            defaults = head_options(head)
            rows = []
            for values in itertools.product(*grid.values()):
                options = dict(zip(grid, values))
                val, nll, test, seconds = [], [], [], []
                for seed in range(args.seeds):
                    t = time.perf_counter()
                    run = fit(head, args.features, seed=seed, streams=args.streams, device=args.device,
                              out=Path(tmp) / f"{head}-{len(rows)}-{seed}", **options)
                    seconds.append(time.perf_counter() - t)
                    m = run.metrics
                    val.append(m["val"]["accuracy"])
                    nll.append((m["val"].get("calibration") or {}).get("nll_before", float("nan")))
                    test.append(m["test"]["accuracy"])
                is_default = all(defaults.get(k) == v for k, v in options.items())
                rows.append({"options": options, "default": is_default, "val": float(np.mean(val)),
                             "val_std": float(np.std(val, ddof=1)) if len(val) > 1 else 0.0,
                             "val_nll": float(np.nanmean(nll)), "test": float(np.mean(test)),
                             "test_std": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
                             "fit_s": float(np.mean(seconds))})
                r = rows[-1]
                print(f"  {head} {options}: val {100 * r['val']:.1f} nll {r['val_nll']:.3f} test {100 * r['test']:.1f} "
                      f"({r['fit_s']:.1f} s)", flush=True)
            rows.sort(key=lambda r: (-r["val"], r["val_nll"]))
            out[head] = rows
            print(f"\n{head} on {args.features.name}, streams {args.streams}, seeds 0-{args.seeds - 1}; ranked by val "
                  "accuracy, then val NLL (test never used to choose):")
            print(f"| rank | {' | '.join(grid)} | val acc (%) | val NLL | test acc (%) | fit (s) |")
            print("|---|" + "---|" * (len(grid) + 4))
            for k, r in enumerate(rows, 1):
                mark = " (default)" if r["default"] else ""
                print(f"| {k}{mark} | " + " | ".join(str(r["options"][g]) for g in grid)
                      + f" | {100 * r['val']:.1f} ± {100 * r['val_std']:.1f} | {r['val_nll']:.3f} | "
                        f"{100 * r['test']:.1f} ± {100 * r['test_std']:.1f} | {r['fit_s']:.1f} |")
            print()
    print(json.dumps({"features": str(args.features), "streams": args.streams, "seeds": args.seeds, "results": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
