"""Which score tells a run's in-distribution videos from foreign ones (issue 15, "unfamiliar")?

    python benchmarks/familiarity.py --run RUN_DIR --foreign CACHE [--foreign CACHE ...]
                                     [--familiar LABEL,...] [--quantile 0.99]

``RUN_DIR`` is a finished run; its cache gives the training samples (the statistics), the val
samples (the threshold) and the test samples, grouped into whole videos as ``harx predict`` sees
them (KTH: a video's subsequences concatenated). ``--foreign`` caches hold other videos embedded
with the same backbone (e.g. ``harx extract --dataset folder --root manifest.csv`` over
``../shared/realdata``); every sample in them counts as foreign unless its label is listed in
``--familiar`` (e.g. the KTH walking clips of another source, for a walk/run run): those are
scored as extra in-distribution videos.

Candidates, all "higher is stranger":

* ``maha`` the shipped score (:mod:`harx.temporal.familiarity`): Mahalanobis distance of the
  video's mean-pooled embedding, standardised with training stats, Ledoit-Wolf shrunk covariance.
* ``maha_win_max`` the same per window (windows as predict cuts them), the largest.
* ``maha_class`` min over classes of the Mahalanobis distance to the class mean (shared
  within-class covariance, shrunk), as in Lee et al. 2018.
* ``knn1_cos``, ``knn5_cos`` cosine distance of the standardised pooled vector to its nearest
  (5th nearest) training vector.
* ``frame_knn`` per-frame cosine distance to the nearest of 4,000 training frames
  (standardised with training frame stats), averaged over up to 64 frames of the video.
* ``msp`` 1 - the video label's probability (the head's mean window probability), and
  ``energy`` -logsumexp of the head's logits, averaged over windows (frames, for ``vote``).

Prints one row per candidate: AUROC (test videos vs foreign), the threshold (the quantile of val
scores), the share of test videos flagged at it, the share of foreign videos flagged, and per
foreign label the flagged count; then a JSON object with all of it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of a foreign video > score of an in-distribution one), ties counted half."""
    inside, outside = np.asarray(inside, float), np.asarray(outside, float)
    greater = (outside[:, None] > inside[None, :]).mean()
    ties = (outside[:, None] == inside[None, :]).mean()
    return float(greater + 0.5 * ties)


def videos_of(store, split: str) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Whole videos of ``split``: each video's samples' frames in order; ids; labels."""
    idx = store.indices(split)
    vid = store.column("video_id")[idx]
    labels = store.column("label")[idx]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, v in zip(idx, vid):
        groups[str(v)].append(int(i))
    out, names, labs = [], [], []
    label_of = dict(zip(map(str, vid), map(str, labels)))
    for v, rows in groups.items():
        out.append(np.concatenate([store.frames(i) for i in rows]).astype(np.float32))
        names.append(v)
        labs.append(label_of[v])
    return out, names, labs


def windows(frames: np.ndarray, length: int) -> list[np.ndarray]:
    """Windows of ``length`` rows every ``length // 2``, the last ending at the last row."""
    n = len(frames)
    if n <= length:
        return [frames]
    step = max(1, length // 2)
    starts = list(range(0, n - length + 1, step))
    if starts[-1] + length < n:
        starts.append(n - length)
    return [frames[s:s + length] for s in starts]


class Candidates:
    def __init__(self, head, X_train, y_train, X_val, window: int, seed: int = 0):
        from harx.temporal.familiarity import _ledoit_wolf, fit_familiarity, mean_pool

        self.head, self.window = head, window
        self.fam = fit_familiarity(X_train, X_val)
        pooled = mean_pool(X_train)
        self.center, self.scale = self.fam.center_, self.fam.scale_
        Z = (pooled - self.center) / self.scale
        self.train_unit = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        # class-conditional: shared within-class covariance
        y = np.asarray(y_train)
        self.class_means = np.stack([Z[y == c].mean(0) for c in np.unique(y)])
        W = Z - self.class_means[np.searchsorted(np.unique(y), y)]
        self.cc = _ledoit_wolf(W)
        # per-frame: a subsample of training frames
        rng = np.random.default_rng(seed)
        frames = np.concatenate(X_train).astype(np.float32)
        self.f_mean, self.f_std = frames.mean(0), frames.std(0) + 1e-6
        pick = rng.choice(len(frames), size=min(4000, len(frames)), replace=False)
        F = (frames[pick] - self.f_mean) / self.f_std
        self.frames_unit = F / np.linalg.norm(F, axis=1, keepdims=True)

    def _maha_cc(self, z: np.ndarray) -> float:
        alpha, mu, ev, basis = self.cc
        noise = max(alpha, 1e-6) * mu
        signal = (1 - alpha) * ev
        d = z[None, :] - self.class_means
        proj = d @ basis.T
        d2 = (d ** 2).sum(1) / noise - (proj ** 2 * (signal / (noise * (signal + noise)))).sum(1)
        return float(np.sqrt(max(d2.min(), 0.0)))

    def _head(self, wins: list[np.ndarray]) -> tuple[float, float]:
        import torch

        logits: list[torch.Tensor] = []
        hook = self.head.module_.register_forward_hook(lambda m, i, o: logits.append(o.detach().float()))
        try:
            probs = np.stack([self.head.predict_proba([w.astype(np.float16)])[0] for w in wins])
        finally:
            hook.remove()
        energies = [float(-torch.logsumexp(l.reshape(-1, l.shape[-1]), dim=-1).mean()) for l in logits]
        p = probs.mean(0)
        return 1.0 - float(p.max() / p.sum()), float(np.mean(energies))

    def score(self, frames: np.ndarray) -> dict[str, float]:
        frames = frames.astype(np.float32)
        wins = windows(frames, self.window)
        pooled = frames.mean(0, dtype=np.float64)
        z = (pooled - self.center) / self.scale
        u = z / np.linalg.norm(z)
        cos = 1.0 - self.train_unit @ u
        cos.sort()
        step = max(1, len(frames) // 64)
        F = (frames[::step][:64] - self.f_mean) / self.f_std
        F /= np.linalg.norm(F, axis=1, keepdims=True)
        frame_d = 1.0 - (F @ self.frames_unit.T).max(1)
        msp, energy = self._head(wins)
        return {"maha": float(self.fam.score_pooled(pooled[None])[0]),
                "maha_win_max": float(self.fam.score_pooled(np.stack([w.mean(0, dtype=np.float64)
                                                                       for w in wins])).max()),
                "maha_class": self._maha_cc(z), "knn1_cos": float(cos[0]), "knn5_cos": float(cos[min(4, len(cos) - 1)]),
                "frame_knn": float(frame_d.mean()), "msp": msp, "energy": energy}


def main() -> None:
    from harx.features.reader import FeatureStore
    from harx.temporal import TemporalHead
    from harx.temporal.run import open_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--foreign", action="append", default=[])
    ap.add_argument("--familiar", default="", help="labels in the foreign caches that are in-distribution")
    ap.add_argument("--quantile", type=float, default=0.99)
    args = ap.parse_args()

    run_dir, config = open_run(args.run)
    head = TemporalHead.load(run_dir / "best.pt")
    store = FeatureStore(config["features"])
    X_train, y_train = store.load("train")
    X_val, _ = store.load("val")
    window = int(np.median([len(x) for x in X_train]))
    cand = Candidates(head, X_train, y_train, X_val, window)
    print(f"run {run_dir.name}: {len(X_train)} train, {len(X_val)} val samples; window {window} frames; "
          f"shrinkage {cand.fam.alpha_:.3f}", flush=True)

    def score_all(videos):
        rows = [cand.score(v) for v in videos]
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}

    val_scores = score_all(X_val)          # val samples as training-unit samples, as fit() sees them
    test_videos, _, _ = videos_of(store, "test")
    test_scores = score_all(test_videos)
    familiar = {s for s in args.familiar.split(",") if s}
    foreign_videos, foreign_labels, extra_in = [], [], []
    for path in args.foreign:
        fs = FeatureStore(path)
        if fs.backbone != store.backbone:
            raise SystemExit(f"{path}: {fs.backbone} features, the run's are {store.backbone}")
        vids, _, labs = videos_of(fs, "test") if len(fs.indices("test")) == len(fs) else \
            ([fs.frames(i) for i in range(len(fs))], None, list(map(str, fs.column("label"))))
        for v, lab in zip(vids, labs):
            (extra_in if lab in familiar else foreign_videos).append(v)
            if lab not in familiar:
                foreign_labels.append(lab)
    foreign_scores = score_all(foreign_videos)
    extra_scores = score_all(extra_in) if extra_in else None

    report = {"run": str(run_dir), "n_train": len(X_train), "n_val": len(X_val), "n_test_videos": len(test_videos),
              "n_foreign": len(foreign_videos), "n_familiar_extra": len(extra_in), "quantile": args.quantile,
              "candidates": {}}
    print(f"{len(test_videos)} test videos, {len(foreign_videos)} foreign, {len(extra_in)} extra in-distribution")
    print(f"{'score':<13} {'AUROC':>6} {'thresh':>9} {'test flagged':>13} {'foreign flagged':>16}"
          + (f" {'extra flagged':>14}" if extra_in else ""))
    for k in test_scores:
        thr = float(np.quantile(val_scores[k], args.quantile))
        a = auroc(test_scores[k], foreign_scores[k])
        ff = float((test_scores[k] > thr).mean())
        tp = float((foreign_scores[k] > thr).mean())
        per = defaultdict(lambda: [0, 0])
        for lab, s in zip(foreign_labels, foreign_scores[k]):
            per[lab][0] += int(s > thr)
            per[lab][1] += 1
        entry = {"auroc": round(a, 4), "threshold": thr, "test_flagged": round(ff, 4), "foreign_flagged": round(tp, 4),
                 "per_label": {lab: f"{v[0]}/{v[1]}" for lab, v in sorted(per.items())},
                 "val_max": float(val_scores[k].max()), "test_max": float(test_scores[k].max()),
                 "foreign_min": float(foreign_scores[k].min())}
        line = f"{k:<13} {a:6.3f} {thr:9.4g} {ff:13.1%} {tp:16.1%}"
        if extra_in:
            entry["extra_flagged"] = round(float((extra_scores[k] > thr).mean()), 4)
            line += f" {entry['extra_flagged']:14.1%}"
        print(line, flush=True)
        report["candidates"][k] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
