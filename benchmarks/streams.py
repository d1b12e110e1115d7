"""Motion stream study (issue 15): do frozen ImageNet features of frame differences separate actions?

The "RGB difference" modality of Temporal Segment Networks (Wang et al., ECCV 2016): each input
image is the (amplified) absolute difference of two frames ``gap`` frames apart, embedded by the
same frozen backbone as the RGB frames. This script builds such a stream for every row of a harx
KTH cache (same frame indices), on the real clips, and scores rgb, motion and rgb+motion under
KTH's official person split (train 11-18, val 01 04 19-21 23-25, test 02 03 05-10 22): model
selection on val only, test scored once per configuration.

    python benchmarks/streams.py [--root ../shared/realdata/kth_walk_run] [--cache DIR]

Steps (everything is cached under ``--cache``, so a rerun only trains and prints):

1. The RGB cache: ``harx extract --dataset kth --root ROOT`` (subsequence unit, every frame),
   written to ``CACHE/kth-rgb.h5`` unless ``--features`` names an existing one.
2. Motion variants (``VARIANTS``): for each video, every frame is decoded with decord, and the
   difference image of frame t is ``clip(amp * |frame[t] - frame[t - gap]|, 0, 255)`` as uint8
   (per RGB channel). For ``t < gap`` there is no earlier frame: the forward difference
   ``|frame[t + gap] - frame[t]|`` is used instead (the same magnitude of motion; only the first
   ``gap`` frames of a video are affected, and KTH ranges rarely start there). ``p99`` scales each
   video by ``255 / (99th percentile of its difference pixels)`` instead of a fixed ``amp``;
   ``stack`` puts grey-level differences at gaps 1, 2 and 4 in the three channels. Difference
   images are embedded with harx's backbone exactly as stage one embeds frames
   (``create_backbone().embed``; default lite0, packaged ImageNet weights, precision auto),
   batches of 8, never mixing videos. Embeddings are kept per variant in ``CACHE/motion/*.npz``.
3. Thinning: a sample's rows are thinned like ``harx extract --every K`` (rows 0, K, 2K, ... of
   each subsequence, i.e. range start + multiples of K). Variants are screened at
   ``--screen-every`` (default 4); the chosen variant (and rgb) are then also scored at every 2
   and 1 (``--every-study``).
4. Evaluators, for each stream: (a) ``frame-LR``: per-frame logistic regression (sklearn,
   standardised features, C chosen on val), sample probability = mean of its frames'
   probabilities; (b) ``mean-LR``: logistic regression on the mean-pooled embedding (C on val);
   (c) harx's ``lstm`` and ``vote`` heads (``create_head``), early stopping on val, seeds 0-2.
   Fusion: ``early`` = per-frame concatenation (rgb || motion, 2,560-d) through every evaluator;
   ``late`` = w * p_rgb + (1 - w) * p_motion with w in 0, 0.1, ..., 1 chosen on val per
   evaluator (per seed for the torch heads, seed s of one stream with seed s of the other).
   Test accuracy at subsequence level and video level (a video's probability = mean of its
   subsequences').

The motion variants are selected on val (never on test): first by the LSTM's val accuracy, then
frame-LR val accuracy, then mean val log loss. Only the selected variants get the 3-seed heads
and the fusion runs, which keeps the study to about 15-25 minutes on a 2-core CPU.

Prints a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "realdata" / "kth_walk_run"
DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "harx-streams"

# name -> (gap, amplification or "p99", mode); mode "rgb" = per-channel difference, "stack" =
# grey differences at gaps (1, 2, 4) as the three channels
VARIANTS = {
    "g1a1": (1, 1.0, "rgb"), "g1a4": (1, 4.0, "rgb"),
    "g2a1": (2, 1.0, "rgb"), "g2a4": (2, 4.0, "rgb"),
    "g4a1": (4, 1.0, "rgb"), "g4a4": (4, 4.0, "rgb"),
    "g2p99": (2, "p99", "rgb"), "g4p99": (4, "p99", "rgb"),
    "stack124a4": (None, 4.0, "stack"),
}
STACK_GAPS = (1, 2, 4)
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
LATE_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
class Data:
    """The RGB cache's samples: per sample its frame indices, rgb rows, label (0/1), split, video."""

    def __init__(self, path: Path, root: Path):
        from harx.features import FeatureStore

        self.path = path
        with FeatureStore(path) as store:
            names = store.class_names
            labels = store.column("label_index").astype(int)
            present = sorted(set(labels.tolist()))
            self.class_names = [names[i] for i in present]
            remap = {old: new for new, old in enumerate(present)}
            self.y = np.array([remap[v] for v in labels])
            self.split = _str(store.column("split"))
            self.video = _str(store.column("video_id"))
            self.paths = np.array([str(Path(root) / p) for p in _str(store.column("path"))])
            self.frames = [store.frame_index(i).astype(np.int64) for i in range(len(store))]
            self.rgb = [store.frames(i).astype(np.float32) for i in range(len(store))]
            self.notes = [n for n in _str(store.column("note")) if n]
            self.extraction = store.extraction
        self.video_path = {v: p for v, p in zip(self.video, self.paths)}

    def idx(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def needed(self, every: int) -> dict[str, np.ndarray]:
        """Per video, the sorted frame indices that rows thinned by ``every`` use."""
        out = defaultdict(set)
        for v, fr in zip(self.video, self.frames):
            out[v].update(fr[::every].tolist())
        return {v: np.array(sorted(s), dtype=np.int64) for v, s in out.items()}


def _str(col) -> np.ndarray:
    return np.array([c.decode() if isinstance(c, bytes) else str(c) for c in col])


def ensure_rgb_cache(root: Path, cache: Path, features: Path | None) -> Path:
    if features is not None:
        return features
    from harx.extract import make_config, run_extract

    out = cache / "kth-rgb.h5"
    t0 = time.perf_counter()
    summary = run_extract(make_config(dataset="kth", root=Path(root), out=out))
    log(f"rgb cache {summary.out} ({time.perf_counter() - t0:.0f} s)")
    return Path(summary.out)


# ---------------------------------------------------------------------------------------------
# motion images and their embeddings
# ---------------------------------------------------------------------------------------------
def decode_all(path: str) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    n = len(vr)
    frames = vr.get_batch(list(range(n))).asnumpy()
    return frames


def _earlier(t: np.ndarray, gap: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with the difference |frame[a] - frame[b]|: b = t - gap, or for t < gap the forward
    pair a = t + gap, b = t (clamped to the video)."""
    a, b = t.copy(), t - gap
    early = b < 0
    a[early] = np.minimum(t[early] + gap, n - 1)
    b[early] = t[early]
    return a, b


def motion_images(video: np.ndarray, t: np.ndarray, variant: str) -> np.ndarray:
    """uint8 (len(t), H, W, 3) difference images of frames ``t`` of ``video`` (N, H, W, 3)."""
    gap, amp, mode = VARIANTS[variant]
    n = len(video)
    if mode == "stack":
        grey = (video.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        chans = []
        for g in STACK_GAPS:
            a, b = _earlier(t, g, n)
            chans.append(np.abs(grey[a] - grey[b]))
        diff = np.stack(chans, axis=-1)
    else:
        a, b = _earlier(t, gap, n)
        diff = np.abs(video[a].astype(np.int16) - video[b].astype(np.int16)).astype(np.float32)
    if amp == "p99":
        scale = 255.0 / max(float(np.percentile(diff, 99)), 1.0)
    else:
        scale = float(amp)
    return np.clip(np.rint(diff * scale), 0, 255).astype(np.uint8)


class MotionCache:
    """Per variant, per video: embedded frame indices and their embeddings (fp16), in one npz."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self.seconds: dict[str, float] = defaultdict(float)   # embedding seconds, this run
        self.count: dict[str, int] = defaultdict(int)         # frames embedded, this run
        self.prep_seconds: dict[str, float] = defaultdict(float)

    def _file(self, variant: str) -> Path:
        return self.folder / f"{variant}.npz"

    def load(self, variant: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if variant not in self.data:
            d = {}
            f = self._file(variant)
            if f.exists():
                z = np.load(f)
                for key in z.files:
                    if key.endswith("::t"):
                        v = key[:-3]
                        d[v] = (z[key], z[v + "::e"])
            self.data[variant] = d
        return self.data[variant]

    def save(self, variant: str) -> None:
        d = self.data[variant]
        arrays = {}
        for v, (t, e) in d.items():
            arrays[v + "::t"], arrays[v + "::e"] = t, e
        tmp = self._file(variant).with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self._file(variant))

    def missing(self, variant: str, needed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        d = self.load(variant)
        out = {}
        for v, t in needed.items():
            have = d.get(v, (np.zeros(0, np.int64), None))[0]
            m = np.setdiff1d(t, have)
            if len(m):
                out[v] = m
        return out

    def fill(self, variants: list[str], needed: dict[str, np.ndarray], video_path: dict[str, str], backbone) -> None:
        """Embed whatever frames of ``needed`` the variants lack (decoding each video once)."""
        todo = {var: self.missing(var, needed) for var in variants}
        videos = sorted(set().union(*[set(m) for m in todo.values()])) if todo else []
        if not videos:
            return
        total = sum(len(t) for m in todo.values() for t in m.values())
        log(f"embedding {total} motion images ({', '.join(variants)}) from {len(videos)} videos")
        from harx.runtime import CpuThreads

        t_start, last_save = time.perf_counter(), time.perf_counter()
        # one torch thread fewer per core that other processes keep busy, as stage one does:
        # spinning OpenMP threads beside a busy process run at a quarter of the speed
        threads = CpuThreads(enabled=backbone.device.type == "cpu")
        for k, v in enumerate(videos):
            video = decode_all(video_path[v])
            for var in variants:
                t = todo[var].get(v)
                if t is None:
                    continue
                t0 = time.perf_counter()
                imgs = motion_images(video, t, var)
                t1 = time.perf_counter()
                emb = embed_batched(backbone, imgs, threads)
                t2 = time.perf_counter()
                self.prep_seconds[var] += t1 - t0
                self.seconds[var] += t2 - t1
                self.count[var] += len(t)
                d = self.load(var)
                old_t, old_e = d.get(v, (np.zeros(0, np.int64), np.zeros((0, emb.shape[1]), np.float16)))
                all_t = np.concatenate([old_t, t])
                all_e = np.concatenate([old_e, emb.astype(np.float16)])
                order = np.argsort(all_t)
                d[v] = (all_t[order], all_e[order])
            if time.perf_counter() - last_save > 60:
                for var in variants:
                    self.save(var)
                last_save = time.perf_counter()
            if (k + 1) % 10 == 0:
                log(f"  {k + 1}/{len(videos)} videos, {time.perf_counter() - t_start:.0f} s")
        for var in variants:
            self.save(var)

    def rows(self, variant: str, video: str, t: np.ndarray) -> np.ndarray:
        vt, ve = self.load(variant)[video]
        pos = np.searchsorted(vt, t)
        assert np.array_equal(vt[pos], t), (variant, video)
        return ve[pos].astype(np.float32)


def embed_batched(backbone, imgs: np.ndarray, threads=None, batch: int = 8) -> np.ndarray:
    """Embed as stage one does: one video's frames cut into batches as even as possible."""
    n = len(imgs)
    if n == 0:
        return np.zeros((0, backbone.embed_dim), np.float32)
    k = math.ceil(n / batch)
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.append(backbone.embed(imgs[a:b]))
        if threads is not None:
            threads.update()
    return np.concatenate(out)


def rgb_throughput(backbone, data: Data, n_videos: int = 6) -> float:
    """frames/s of the backbone on raw frames of a few videos (the rgb stream), same batching."""
    vids = sorted(set(data.video))[:: max(1, len(set(data.video)) // n_videos)][:n_videos]
    frames = [decode_all(data.video_path[v])[::2][:200] for v in vids]
    from harx.runtime import CpuThreads

    threads = CpuThreads(enabled=backbone.device.type == "cpu")
    embed_batched(backbone, frames[0][:16], threads)  # warm-up
    t0 = time.perf_counter()
    n = sum(len(embed_batched(backbone, f, threads)) for f in frames)
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def logloss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1))))


def video_accuracy(p: np.ndarray, y: np.ndarray, videos: np.ndarray) -> float:
    hits = []
    for v in np.unique(videos):
        m = videos == v
        hits.append(p[m].mean(0).argmax() == y[m][0])
    return float(np.mean(hits))


def _fit_lr(X, y, C):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(C=C, max_iter=2000)
    with threadpool_limits(1):   # the machine is shared; 1 thread is also what harx's training uses
        clf.fit(X, y)
    return clf


def frame_lr(Xtr, ytr, Xva, yva, Xte) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-frame LR, sample probability = mean of frame probabilities; C chosen on val."""
    from sklearn.preprocessing import StandardScaler

    F = np.concatenate(Xtr)
    fy = np.concatenate([np.full(len(x), c) for x, c in zip(Xtr, ytr)])
    sc = StandardScaler().fit(F)
    F = sc.transform(F)

    def sample_probs(clf, X):
        lens = [len(x) for x in X]
        pf = clf.predict_proba(sc.transform(np.concatenate(X)))
        out, i = [], 0
        for n in lens:
            out.append(pf[i:i + n].mean(0))
            i += n
        return np.array(out)

    best = None
    for C in C_GRID:
        clf = _fit_lr(F, fy, C)
        pv = sample_probs(clf, Xva)
        key = (accuracy(pv, yva), -logloss(pv, yva))
        if best is None or key > best[0]:
            best = (key, C, clf, pv)
    _, C, clf, pv = best
    return pv, sample_probs(clf, Xte), {"C": C}


def mean_lr(Xtr, ytr, Xva, yva, Xte) -> tuple[np.ndarray, np.ndarray, dict]:
    from sklearn.preprocessing import StandardScaler

    M = lambda X: np.stack([x.mean(0) for x in X])  # noqa: E731
    sc = StandardScaler().fit(M(Xtr))
    A, B, T = sc.transform(M(Xtr)), sc.transform(M(Xva)), sc.transform(M(Xte))
    best = None
    for C in C_GRID:
        clf = _fit_lr(A, ytr, C)
        pv = clf.predict_proba(B)
        key = (accuracy(pv, yva), -logloss(pv, yva))
        if best is None or key > best[0]:
            best = (key, C, clf, pv)
    _, C, clf, pv = best
    return pv, clf.predict_proba(T), {"C": C}


def torch_head(name: str, seed: int):
    def run(Xtr, ytr, Xva, yva, Xte):
        from harx.temporal import create_head

        h = create_head(name, num_features=Xtr[0].shape[1], num_classes=2, random_state=seed)
        h.fit(Xtr, ytr, X_val=Xva, y_val=yva)
        return h.predict_proba(Xva), h.predict_proba(Xte), {"epochs": f"{h.best_epoch_}/{h.n_epochs_}"}
    return run


class Evaluator:
    def __init__(self, data: Data, seeds: int):
        self.data, self.seeds = data, seeds
        self.tr, self.va, self.te = data.idx("train"), data.idx("val"), data.idx("test")
        self.y = data.y
        self.probs: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}   # (stream, every, method) -> (pv, pt)
        self.fit_seconds: dict[tuple, float] = {}

    def methods(self, full: bool) -> list[str]:
        seeds = range(self.seeds) if full else range(1)
        return ["frame-LR", "mean-LR"] + [f"lstm/s{s}" for s in seeds] + ([f"vote/s{s}" for s in seeds] if full else [])

    def run(self, stream: str, every: int, X: list[np.ndarray], methods: list[str]) -> None:
        Xtr, Xva, Xte = ([X[i] for i in ix] for ix in (self.tr, self.va, self.te))
        ytr, yva = self.y[self.tr], self.y[self.va]
        for m in methods:
            key = (stream, every, m)
            if key in self.probs:
                continue
            if m == "frame-LR":
                fn = frame_lr
            elif m == "mean-LR":
                fn = mean_lr
            else:
                head, seed = m.split("/s")
                fn = torch_head(head, int(seed))
            t0 = time.perf_counter()
            pv, pt, info = fn(Xtr, ytr, Xva, yva, Xte)
            self.fit_seconds[key] = time.perf_counter() - t0
            self.probs[key] = (pv, pt)
            log(f"  {stream:>16} every{every} {m:<9} val {accuracy(pv, yva):.3f} test {accuracy(pt, self.y[self.te]):.3f}"
                f"  ({self.fit_seconds[key]:.1f} s) {info}")

    def late(self, a: str, b: str, every: int, name: str) -> None:
        """p = w p_a + (1 - w) p_b, w chosen on val per method (ties: val log loss, then w nearest 0.5)."""
        yva = self.y[self.va]
        for (s, e, m), (pva, pta) in list(self.probs.items()):
            if s != a or e != every or (b, every, m) not in self.probs:
                continue
            pvb, ptb = self.probs[(b, every, m)]
            best = None
            for w in LATE_WEIGHTS:
                pv = w * pva + (1 - w) * pvb
                key = (accuracy(pv, yva), -logloss(pv, yva), -abs(w - 0.5))
                if best is None or key > best[0]:
                    best = (key, w)
            w = best[1]
            self.probs[(name, every, m)] = (w * pva + (1 - w) * pvb, w * pta + (1 - w) * ptb)
            self.fit_seconds[(name, every, m)] = float(w)   # the chosen weight (no fit)

    def summary(self, stream: str, every: int) -> dict:
        """Per evaluator family: val acc, test subsequence acc, test video acc (mean, std, values)."""
        yva, yte, vte = self.y[self.va], self.y[self.te], self.data.video[self.te]
        fam = defaultdict(list)
        for (s, e, m), (pv, pt) in self.probs.items():
            if s == stream and e == every:
                fam[m.split("/s")[0]].append((m, accuracy(pv, yva), accuracy(pt, yte), video_accuracy(pt, yte, vte),
                                              logloss(pv, yva)))
        out = {}
        for f, rows in fam.items():
            rows.sort()
            arr = np.array([r[1:] for r in rows])
            out[f] = {"n": len(rows), "val": _ms(arr[:, 0]), "test": _ms(arr[:, 1]), "test_video": _ms(arr[:, 2]),
                      "val_logloss": float(arr[:, 3].mean())}
            if "late" in stream:
                out[f]["w_rgb"] = [self.fit_seconds[(stream, every, r[0])] for r in rows]
        return out


def _ms(v: np.ndarray) -> dict:
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "values": [round(float(x), 4) for x in v]}


# ---------------------------------------------------------------------------------------------
def stream_X(data: Data, motion: MotionCache, stream: str, every: int) -> list[np.ndarray]:
    """Per sample, the (rows, D) matrix of ``stream`` ("rgb", a variant, or "rgb+VARIANT")."""
    parts = stream.split("+")
    out = []
    for i in range(len(data.y)):
        t = data.frames[i][::every]
        cols = []
        for p in parts:
            if p == "rgb":
                cols.append(data.rgb[i][::every])
            else:
                cols.append(motion.rows(p, data.video[i], t))
        out.append(np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0])
    return out


def fmt(d: dict | None) -> str:
    if d is None:
        return "-"
    if len(d.get("values", ())) > 1:
        return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"
    return f"{100 * d['mean']:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="KTH folder (AVIs + 00sequences.txt)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the rgb cache and motion npz")
    ap.add_argument("--features", type=Path, default=None, help="an existing harx KTH cache (every frame)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--screen-every", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="motion variants to screen")
    ap.add_argument("--top", type=int, default=2, help="variants (by val) that get 3 seeds and fusion")
    ap.add_argument("--every-study", default="1,2,4", help="every-K values for rgb and the chosen variant ('' = skip)")
    args = ap.parse_args(argv)

    t_all = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    features = ensure_rgb_cache(args.root, args.cache, args.features)
    data = Data(features, args.root)
    ext = data.extraction
    log(f"cache {features}: {len(data.y)} samples, classes {data.class_names}, "
        f"{sum(len(f) for f in data.frames)} rows; splits " +
        ", ".join(f"{s} {len(data.idx(s))}" for s in ("train", "val", "test")))
    variants = [v for v in args.variants.split(",") if v]
    motion = MotionCache(args.cache / "motion")
    ev = Evaluator(data, args.seeds)
    yva = data.y[data.idx("val")]

    from harx.extract.backbones import create_backbone
    backbone = None

    def bb():
        nonlocal backbone
        if backbone is None:
            backbone = create_backbone()
            log(f"backbone {backbone.name}, {backbone.precision}, weights {backbone.weights}")
        return backbone

    se = args.screen_every
    if motion.missing(variants[0], data.needed(se)) or any(motion.missing(v, data.needed(se)) for v in variants):
        motion.fill(variants, data.needed(se), data.video_path, bb())

    # screening: every variant with frame-LR, mean-LR and one LSTM seed; rgb gets the full set
    log(f"screening at every {se}")
    ev.run("rgb", se, stream_X(data, motion, "rgb", se), ev.methods(full=True))
    for v in variants:
        ev.run(v, se, stream_X(data, motion, v, se), ev.methods(full=False))

    def val_key(v):
        s = ev.summary(v, se)
        return (s["lstm"]["val"]["mean"], s["frame-LR"]["val"]["mean"],
                -np.mean([s[f]["val_logloss"] for f in ("lstm", "frame-LR", "mean-LR")]))

    ranked = sorted(variants, key=val_key, reverse=True)
    chosen = ranked[:args.top]
    log(f"variants by val: {ranked}; chosen {chosen}")

    for v in chosen:
        ev.run(v, se, stream_X(data, motion, v, se), ev.methods(full=True))
        ev.run(f"rgb+{v}", se, stream_X(data, motion, f"rgb+{v}", se), ev.methods(full=True))
        ev.late("rgb", v, se, f"late(rgb,{v})")

    # every-K study for rgb and the best variant
    best = chosen[0]
    study = sorted({int(k) for k in args.every_study.split(",") if k}, reverse=True)
    for k in study:
        if k == se:
            continue
        need = data.needed(k)
        if motion.missing(best, need):
            motion.fill([best], need, data.video_path, bb())
        for s in ("rgb", best, f"rgb+{best}"):
            ev.run(s, k, stream_X(data, motion, s, k), ev.methods(full=True))
        ev.late("rgb", best, k, f"late(rgb,{best})")

    # throughput: motion per variant from this run's embedding (or a fresh short measurement)
    thr = {}
    for v in variants:
        if motion.count[v] >= 500:
            thr[v] = {"embed_fps": motion.count[v] / motion.seconds[v],
                      "with_diff_fps": motion.count[v] / (motion.seconds[v] + motion.prep_seconds[v])}
    if backbone is not None or not thr:
        thr["rgb"] = {"embed_fps": rgb_throughput(bb(), data)}

    # ---- table
    rows = []
    streams = ["rgb"] + variants + [f"rgb+{v}" for v in chosen] + [f"late(rgb,{v})" for v in chosen]
    lines = ["| stream | every | rows | frame-LR | mean-LR | vote head | LSTM head | LSTM video | frame-LR video | LSTM val |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted({se, *study}):
        for s in streams:
            summ = ev.summary(s, k)
            if not summ:
                continue
            n_rows = sum(len(f[::k]) for f in data.frames)
            g = lambda f, what="test": fmt(summ.get(f, {}).get(what))  # noqa: E731
            lines.append(f"| {s} | {k} | {n_rows} | {g('frame-LR')} | {g('mean-LR')} | {g('vote')} | {g('lstm')} | "
                         f"{g('lstm', 'test_video')} | {g('frame-LR', 'test_video')} | {g('lstm', 'val')} |")
            rows.append({"stream": s, "every": k, "rows": n_rows, **summ})
    print("Test accuracy (%), official KTH person split, walking vs running; subsequence level unless "
          "'video'; torch heads mean ± std over seeds (screened variants: seed 0 only).")
    print("\n".join(lines))
    print("Late fusion weight of rgb chosen on val (per evaluator; per seed for the heads): " + "; ".join(
        f"{r['stream']} every{r['every']}: " + ", ".join(f"{f} {r[f]['w_rgb']}" for f in ("frame-LR", "mean-LR", "vote", "lstm")
                                                        if f in r) for r in rows if "late" in r["stream"]))
    print("\nVal accuracy (model selection):")
    for r in rows:
        print(f"  {r['stream']:>22} every{r['every']}: " +
              ", ".join(f"{f} {fmt(r[f]['val'])}" for f in ("frame-LR", "mean-LR", "vote", "lstm") if f in r))
    print("\nThroughput (frames/s, backbone embed; 'with_diff' adds difference-image making):")
    for k, v in thr.items():
        print(f"  {k}: " + ", ".join(f"{a} {b:.0f}" for a, b in v.items()))

    # goal check: fused temporal head >= 97 % subsequence test and >= 10 points above rgb frame voting
    goal = []
    for k in sorted({se, *study}):
        base = ev.summary("rgb", k).get("frame-LR", {}).get("test", {}).get("mean")
        base_vote = ev.summary("rgb", k).get("vote", {}).get("test", {}).get("mean")
        for s in streams:
            if "+" not in s and "late" not in s:
                continue
            lst = ev.summary(s, k).get("lstm")
            if lst and base is not None:
                m = lst["test"]["mean"]
                goal.append({"stream": s, "every": k, "lstm_test": m, "rgb_frame_lr": base, "rgb_vote_head": base_vote,
                             "meets": bool(m >= 0.97 and m - max(base, base_vote or 0) >= 0.10)})
    print("\nGoal (fused LSTM >= 97 % and >= 10 points above rgb frame voting):")
    for g in goal:
        print(f"  {g['stream']} every{g['every']}: LSTM {100 * g['lstm_test']:.1f} vs rgb frame-LR "
              f"{100 * g['rgb_frame_lr']:.1f} / vote head {100 * (g['rgb_vote_head'] or 0):.1f} -> "
              f"{'met' if g['meets'] else 'not met'}")
    result = {"features": str(features), "backbone": ext.get("backbone") if isinstance(ext, dict) else None,
              "classes": data.class_names, "screen_every": se, "ranked_by_val": ranked, "chosen": chosen,
              "rows": rows, "throughput_fps": thr, "goal": goal,
              "seconds": round(time.perf_counter() - t_all, 1),
              "fit_seconds": {f"{s}|{e}|{m}": round(v, 2) for (s, e, m), v in ev.fit_seconds.items()
                              if "late" not in s}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
