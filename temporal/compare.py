"""Train several heads over several seeds on one cache and compare them, per stream and fused.

``compare(features, heads=("vote", "lstm"), seeds=3)`` calls :func:`temporal.fit` for every
(head, streams, seed), reusing finished runs with the same cache and configuration (their default
run folders are named by a hash of both), then aggregates over seeds and writes to ``out``. The
stream selections default to each stream of the cache alone and, where it has several, all of
them fused (``fusion``, late by default): the headline, frame vote against the LSTM, is then shown
on the frames, on motion and on both. Each column is a ``HEAD`` label such as ``vote-rgb`` or
``lstm-rgb+motion`` (:func:`temporal.run.run_label`)::

    compare.json   protocol; results[HEAD][SPLIT][METRIC] = {mean, std, values}, SPLIT = val|test,
                   METRIC = accuracy|mean_class_accuracy|macro_f1 (fractions in 0..1);
                   results[HEAD][SPLIT]["per_class_accuracy"][CLASS] = {mean, std, values};
                   results[HEAD][SPLIT]["video"|"majority_vote"] likewise, where reported;
                   results[HEAD][SPLIT]["calibration"][KEY] likewise, KEY = ece_before|ece_after|
                   nll_before|nll_after|temperature (temperature scaling fitted on each run's val);
                   confusion_differences: the class pairs whose confusion differs most; runs
    compare.md     the same as tables (what the CLI prints): protocol header first
    compare.csv    one row per run (head, seed, folder, every summary metric)
    compare.png    bars with seed std error bars: test metrics per head, per-class test accuracy

``std`` is the sample standard deviation over seeds (``ddof=1``; 0 for one seed). The default
``out`` is ``runs_root(cache) / "compare-<heads>-<n>seeds-<hash>"`` (see :func:`temporal.run.runs_root`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harx.features.errors import InvalidOptionError
from harx.features.reader import FeatureStore
from harx.features.schema import MAP_SUFFIX, is_map_stream
from harx.features.writer import make_folder

from .fusion import head_takes_maps, parse_stream_selection, streams_for_head
from .metrics import METRIC_NAMES
from .registry import create_head, list_heads
from .report import pct, plot_compare
from .run import RunResult, _write_json, fit, resolve_features, runs_root

__all__ = ["CompareResult", "compare"]

DEFAULT_HEADS = ("vote", "lstm")
#: a split's calibration entries aggregated over seeds (``results[HEAD][SPLIT]["calibration"][KEY]``)
CALIBRATION_KEYS = ("ece_before", "ece_after", "nll_before", "nll_after", "temperature")


@dataclass
class CompareResult:
    """What :func:`compare` did: the output folder, the aggregate, the markdown, every run."""

    path: Path
    results: dict
    protocol: dict
    table: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def n_reused(self) -> int:
        return sum(r.reused for r in self.runs)


def compare(
    features: str | Path | None = None,
    heads: Sequence[str] | str = DEFAULT_HEADS,
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    refit_trainval: bool = False,
    device: str | None = None,
    epochs: int | None = None,
    head_options: dict[str, dict] | None = None,
    streams: Sequence[str] | str | None = None,
    fusion: str = "late",
    fold: str | int | None = None,
    load: str = "auto",
    command: str | Sequence[str] | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    on_epoch: Callable | None = None,
) -> CompareResult:
    """Fit each head with each seed (reusing finished runs) and write the comparison.

    Args:
        features: the cache; ``None``: the most recent one in the default location.
        heads: head names, or one comma-separated string (``"vote,lstm"``); ``"all"``: every
            registered head (the map heads only on a cache with spatial maps).
        seeds: a count ``n`` (seeds 0..n-1) or explicit seeds.
        out: folder for compare.json/md/csv/png (runs stay in their default folders, so that
            ``harx fit`` and later comparisons reuse them).
        refit_trainval, device, epochs: passed to every :func:`fit`.
        head_options: per-head options, e.g. ``{"lstm": {"hidden_size": 256}}``.
        streams: stream selections, e.g. ``["rgb", "motion", "rgb+motion"]`` or one comma-separated
            string ``"rgb,rgb+motion"``; ``None``: each stream of the cache, then all fused.
        fusion: how a selection of several streams is fused (``late`` or ``early``).
        fold: for a dataset with official folds, one fold (name or 1-based number; default: the
            first), or ``"all"``: each fold compared (``OUT/<fold>/``), then every column's test
            scores as mean ± std over the folds (``compare_folds.md``/``.json``), as these
            datasets are published.
        load: where each run keeps the features (auto, memory, disk; see :mod:`temporal.loading`).
        on_run: called with each :class:`RunResult` (``.reused`` says whether it trained).
        on_epoch: passed to :func:`fit` (called only for runs that train).

    Raises:
        UnknownNameError, InvalidOptionError: a bad head name, seed count or option.
    """
    if isinstance(heads, str):
        heads = [h.strip() for h in heads.split(",") if h.strip()]
    heads = list(dict.fromkeys(heads))
    if not heads:
        raise InvalidOptionError(f"no heads to compare; choose from: {', '.join(list_heads())}")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise InvalidOptionError(f"--seeds must be >= 1, got {seeds}")
        seed_list = list(range(int(seeds)))
    else:
        seed_list = [int(s) for s in seeds]
        if not seed_list:
            raise InvalidOptionError("no seeds given")
    store = None
    if heads == ["all"]:      # every registered head; the map heads where the cache has maps
        store = FeatureStore(resolve_features(features))
        has_maps = any(is_map_stream(s) for s in store.streams)
        heads = [h for h in list_heads() if has_maps or not head_takes_maps(h)]
    head_options = dict(head_options or {})
    unknown = sorted(set(head_options) - set(heads))
    if unknown:
        raise InvalidOptionError(f"options given for {', '.join(unknown)}, which are not among the heads compared "
                                 f"({', '.join(heads)})")
    if store is None:         # opened after the option checks, whose errors come first
        store = FeatureStore(resolve_features(features))
    path = store.path
    if str(fold) == "all":
        return _compare_folds(store, dict(heads=heads, seeds=seeds, refit_trainval=refit_trainval, device=device,
                                          epochs=epochs, head_options=head_options, streams=streams, fusion=fusion,
                                          load=load, command=command, on_run=on_run, on_epoch=on_epoch), out)
    fold = store.fold_name(fold if fold is not None else (store.folds[0] if store.folds else None))
    names = store.class_names
    vectors = [s for s in store.streams if not is_map_stream(s)] or store.streams
    selections = stream_selections(streams, vectors)
    # each head reads its kind of stream: a map head (convlstm) the maps of the images selected
    plan = {(k, head): streams_for_head(head, selection, store.streams, str(store.path))
            for k, selection in enumerate(selections) for head in heads}
    for selection in plan.values():   # a stream the cache lacks fails now, in one line
        store.check_streams(selection, needed_by="harx compare")
    if refit_trainval and fusion == "late" and any(len(s) > 1 for s in selections):
        raise InvalidOptionError("--refit-trainval is not offered with late fusion (each stream's head would need "
                                 "its own epoch count); compare single streams (--streams rgb,motion) or use "
                                 "--fusion early")
    if out is not None:
        make_folder(Path(out))  # a bad --out fails now, not after training every run

    runs: list[RunResult] = []
    for k in range(len(selections)):
        for head in heads:
            for seed in seed_list:
                r = fit(head, path, seed=seed, refit_trainval=refit_trainval, device=device, epochs=epochs,
                        reuse=True, on_epoch=on_epoch, streams=plan[k, head], fusion=fusion, fold=fold, load=load,
                        **head_options.get(head, {}))
                runs.append(r)
                if on_run is not None:
                    on_run(r)

    head_names = heads
    # columns: the heads, or with several stream selections vote-rgb, lstm-rgb, ..., lstm-rgb+motion
    column = {id(r): (r.head if len(selections) == 1 else r.label) for r in runs}
    heads = list(dict.fromkeys(column[id(r)] for r in runs))
    results = {h: _aggregate([r.metrics for r in runs if column[id(r)] == h], names) for h in heads}
    first = {h: next(r for r in runs if column[id(r)] == h) for h in heads}
    p0 = first[heads[0]].metrics["protocol"]
    protocol = {
        **{k: p0.get(k) for k in ("dataset", "split_protocol", "fold", "unit_scored", "video_level", "sampling", "backbone",
                                   "embed_dim", "class_names", "trained_on", "validation_scores", "cache",
                                   "cache_fingerprint", "samples", "absent_from_training", "warnings")},
        "scored_split": "test (val shown for reference: it chose the epochs)",
        "seeds": seed_list,
        "std": "sample standard deviation over seeds (ddof=1)",
        "frame_aggregation": {h: first[h].metrics["protocol"]["frame_aggregation"] for h in heads},
        "model_selection": {h: _selection([r.metrics for r in runs if column[id(r)] == h]) for h in heads},
        "streams": {h: first[h].streams for h in heads},
        "head_of": {h: first[h].head for h in heads},
        "strategy": {h: strategy_of(first[h].head) for h in heads},
        "stage_one_ms_per_frame": {h: store.stage_one_ms(first[h].streams) for h in heads},
        "stage_one_cost": store.attrs.get("stage_one_cost") or None,
        "fusion": {h: first[h].metrics["protocol"].get("fusion") for h in heads
                   if first[h].metrics["protocol"].get("fusion")},
    }
    confusions = _confusion_differences(results, names)
    digest = hashlib.sha256(json.dumps([head_names, seed_list, refit_trainval, device, epochs, head_options,
                                        store.fingerprint, selections, fusion, fold], sort_keys=True,
                                       default=str).encode()).hexdigest()[:6]
    out_dir = Path(out) if out is not None else (
        runs_root(path) / f"compare-{'+'.join(head_names)}-{len(seed_list)}seeds-{digest}")
    make_folder(out_dir)
    table = compare_markdown(protocol, results, names, confusions)
    doc = {"protocol": protocol, "heads": heads, "seeds": seed_list, "results": results,
           "confusion_differences": confusions,
           "runs": [{"head": r.head, "streams": r.streams, "label": r.label, "seed": r.seed, "path": str(r.path),
                     "reused": r.reused} for r in runs],
           "command": command if command is None or isinstance(command, str) else " ".join(map(str, command))}
    _write_json(out_dir / "compare.json", doc)
    (out_dir / "compare.md").write_text(table)
    _write_csv(out_dir / "compare.csv", runs)
    title = (f"{', '.join(head_names)} on {protocol['dataset']} ({protocol['backbone']}), "
             f"{len(seed_list)} seed{'s' if len(seed_list) > 1 else ''}, unit: {protocol['unit_scored']}")
    plot_compare(out_dir / "compare.png", results, names, title)
    return CompareResult(path=out_dir, results=results, protocol=protocol, table=table, runs=runs)


def strategy_of(head: str) -> str:
    """The strategy a head stands for, in words (its class's ``strategy``)."""
    return type(create_head(head, 1, 2)).strategy or head


#: what a stream feeds a head, for the strategy table
INPUT_WORDS = {"rgb": "rgb (CNN)", "motion": "motion (CNN)", "pose": "pose (BlazePose keypoints)",
               "rgb_map": "rgb (CNN maps)", "motion_map": "motion (CNN maps)"}


def _strategy_table(protocol: dict, results: dict) -> list[str]:
    """One row per head and stream selection: what a researcher choosing a method compares,
    accuracy beside both costs (training, and stage one per frame of the streams it reads)."""
    heads = list(results)
    unit = protocol.get("unit_scored") or "sample"
    video = any("video" in results[h].get("test", {}) for h in heads)
    cost = protocol.get("stage_one_ms_per_frame") or {}
    devices = sorted({e.get("device", "") for e in (protocol.get("stage_one_cost") or {}).values()
                      if isinstance(e, dict)})
    lines = ["## Strategies", "",
             f"Each strategy of the field as a head on this cache's streams: test accuracy (%) mean ± std over the "
             f"seeds, fit time (mean over seeds, this machine), and stage one's model time per frame of the streams "
             f"it reads (decoding excluded; rgb and motion: the backbone on frames and on motion images; pose: "
             f"BlazePose keypoints; "
             + (f"measured on {', '.join(devices)}" if devices else "not recorded in this cache") + ").", "",
             f"| strategy | input | test, per {unit} |" + (" test, per video |" if video else "")
             + " fit (s) | stage one (ms/frame) |",
             "|---|---|---|" + ("---|" if video else "") + "---|---|"]
    fusion = protocol.get("fusion") or {}
    for h in heads:
        streams = (protocol.get("streams") or {}).get(h) or []
        words = " + ".join(INPUT_WORDS.get(s, s) for s in streams)
        if h in fusion:
            words += f", {str(fusion[h]).split(':')[0]} fusion"
        test = results[h].get("test", {})
        row = f"| {(protocol.get('strategy') or {}).get(h, h)} (`{(protocol.get('head_of') or {}).get(h, h)}`) | {words} | {_pm(test.get('accuracy'))} |"
        if video:
            row += f" {_pm((test.get('video') or {}).get('accuracy'))} |"
        fit_s = (results[h].get("fit_seconds") or {}).get("mean")
        ms = cost.get(h)
        row += f" {'—' if fit_s is None else f'{fit_s:.1f}'} | {'—' if ms is None else f'{ms:.2f}'} |"
        lines.append(row)
    return lines + [""]


def stream_selections(streams: Sequence[str] | str | None, available: Sequence[str]) -> list[list[str]]:
    """``"rgb,rgb+motion"`` -> ``[["rgb"], ["rgb", "motion"]]``; ``None``: each available stream,
    then all of them together when there are several."""
    if streams is None:
        chosen = [[s] for s in available] + ([list(available)] if len(available) > 1 else [])
    else:
        items = streams.split(",") if isinstance(streams, str) else list(streams)
        chosen = [parse_stream_selection(item, available) for item in items if str(item).strip()]
        if not chosen:
            raise InvalidOptionError("--streams names no stream selection; e.g. rgb,motion,rgb+motion")
    unique: list[list[str]] = []
    for c in chosen:
        if c not in unique:
            unique.append(c)
    return unique


def _compare_folds(store: FeatureStore, options: dict, out) -> CompareResult:
    """``compare(..., fold="all")``: each fold compared in ``OUT/<fold>``, then each column's test
    accuracy (per sample, and per video where reported) as mean ± std over the folds' seed means."""
    if not store.folds:
        raise InvalidOptionError(f"{store.path} has one split, no folds; --fold all is for datasets with official "
                                 "folds (UCF101, UCF50, HMDB51)")
    base = Path(out) if out is not None else runs_root(store.path) / "compare-folds"
    make_folder(base)
    per_fold = {name: compare(store.path, out=base / name, fold=name, **options) for name in store.folds}
    columns = list(next(iter(per_fold.values())).results)
    results = {}
    for col in columns:
        entry = {"folds": {}}
        for level in ("accuracy", "video"):
            means = {}
            for name, res in per_fold.items():
                test = res.results[col].get("test") or {}
                block = test.get("video") if level == "video" else test
                if block and block.get("accuracy", {}).get("mean") is not None:
                    means[name] = block["accuracy"]["mean"]
            if means:
                entry["folds"][level] = means
                entry.setdefault("test", {})["accuracy" if level == "accuracy" else "video_accuracy"] = \
                    _stats(list(means.values()))
        results[col] = entry
    first = next(iter(per_fold.values()))
    protocol = dict(first.protocol, fold="all: " + ", ".join(store.folds),
                    folds_aggregation="each fold's test accuracy is the mean over its seeds; shown as mean ± std "
                                      "(ddof=1) over the folds")
    lines = [f"# {', '.join(columns)} on {protocol['dataset']}, every fold", "",
             f"**Protocol.** {protocol.get('split_protocol')}; folds {', '.join(store.folds)}, each compared as in "
             f"its own compare.md ({base}/<fold>/); seeds {', '.join(map(str, protocol['seeds']))}; "
             f"{protocol['folds_aggregation']}.", "",
             "| test accuracy (%) | " + " | ".join(store.folds) + " | mean ± std over folds |",
             "|---|" + "---|" * (len(store.folds) + 1)]
    for col in columns:
        for level, label in (("accuracy", ""), ("video", ", per video")):
            means = results[col]["folds"].get(level)
            if not means:
                continue
            key = "accuracy" if level == "accuracy" else "video_accuracy"
            lines.append(f"| {col}{label} | " + " | ".join(pct(means.get(f)) for f in store.folds)
                         + f" | {_pm(results[col]['test'][key])} |")
    table = "\n".join(lines) + "\n"
    _write_json(base / "compare_folds.json", {"protocol": protocol, "results": results,
                                               "per_fold": {n: str(r.path) for n, r in per_fold.items()}})
    (base / "compare_folds.md").write_text(table)
    return CompareResult(path=base, results=results, protocol=protocol, table=table,
                         runs=[r for res in per_fold.values() for r in res.runs])


# ----------------------------------------------------------------------------- aggregation

def _stats(values: list) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "values": values}
    arr = np.asarray(vals, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) if v is not None else None for v in values]}


def _aggregate_block(blocks: list[dict], names: list[str]) -> dict:
    out = {m: _stats([b[m] for b in blocks]) for m in METRIC_NAMES}
    out["per_class_accuracy"] = {c: _stats([b["per_class_accuracy"].get(c) for b in blocks]) for c in names}
    cm = np.sum([np.asarray(b["confusion_matrix"]) for b in blocks], axis=0)
    out["confusion_matrix_sum"] = cm.astype(int).tolist()
    out["n"] = blocks[0]["n"]
    if any(b.get("calibration") for b in blocks):   # runs fitted before harx calibrated have none: None
        out["calibration"] = {k: _stats([(b.get("calibration") or {}).get(k) for b in blocks])
                              for k in CALIBRATION_KEYS}
    return out


def _aggregate(metrics_list: list[dict], names: list[str]) -> dict:
    res = {}
    for split in ("val", "test"):
        blocks = [m[split] for m in metrics_list if m.get(split)]
        if not blocks:
            continue
        res[split] = _aggregate_block(blocks, names)
        for sub in ("video", "majority_vote"):
            subs = [b[sub] for b in blocks if b.get(sub)]
            if subs:
                res[split][sub] = _aggregate_block(subs, names)
    res["fit_seconds"] = _stats([m.get("training", {}).get("fit_seconds") for m in metrics_list])
    return res


def _selection(metrics_list: list[dict]) -> str:
    """The model-selection rule of one head's runs, with each seed's chosen epoch."""
    t = [m["training"] for m in metrics_list]
    if not metrics_list[0].get("val"):
        return f"no val split: a fixed {t[0]['max_epochs']} epochs, last kept"
    text = (f"early stopping on val accuracy (ties: val loss), patience {t[0]['patience']}, at most "
            f"{t[0]['max_epochs']} epochs; best epoch per seed: {', '.join(str(x['best_epoch']) for x in t)}")
    if t[0].get("refit_epochs"):
        text += "; then refit on train+val for that many epochs"
    return text


def _confusion_differences(results: dict, names: list[str], top: int = 5) -> list[dict]:
    """Off-diagonal (true, predicted) pairs whose test confusion rate differs most between heads."""
    heads = [h for h in results if "test" in results[h]]
    if len(heads) < 2:
        return []
    rates = {}
    for h in heads:
        cm = np.asarray(results[h]["test"]["confusion_matrix_sum"], dtype=float)
        rows = cm.sum(1, keepdims=True)
        rates[h] = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    pairs = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            vals = {h: float(rates[h][i, j]) for h in heads}
            spread = max(vals.values()) - min(vals.values())
            if spread > 0:
                pairs.append({"true": a, "predicted": b, "rate": vals, "difference": spread})
    pairs.sort(key=lambda d: -d["difference"])
    return pairs[:top]


# ----------------------------------------------------------------------------- output

def _pm(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "—"
    return f"{pct(s['mean'])} ± {pct(s['std'])}"


def _num(s: dict | None) -> str:
    """mean ± std of a value that is no fraction (a temperature, an NLL)."""
    if not s or s.get("mean") is None:
        return "—"
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def _streams_words(protocol: dict) -> str:
    """'rgb; motion; rgb+motion (late: ...)': each stream selection compared, with its fusion."""
    selections = list(dict.fromkeys("+".join(s) for s in (protocol.get("streams") or {}).values())) or ["rgb"]
    fusions = {"+".join(protocol["streams"][h]): f for h, f in (protocol.get("fusion") or {}).items()}
    return "; ".join(s + (f" ({fusions[s].split(':')[0]} fusion)" if s in fusions else "") for s in selections)


def _headline(protocol: dict, results: dict) -> list[str]:
    """Test accuracy of each head (rows: stream selections), when more than one selection was
    compared: frame voting against the temporal heads, on each stream and fused."""
    # a map head's row is that of the images its maps are of: convlstm on rgb_map sits in row rgb
    streams = {h: [x[:-len(MAP_SUFFIX)] if is_map_stream(x) else x for x in v]
               for h, v in (protocol.get("streams") or {}).items()}
    selections = list(dict.fromkeys("+".join(s) for s in streams.values()))
    if len(selections) < 2:
        return []
    head_of = protocol.get("head_of") or {h: h for h in results}
    heads = list(dict.fromkeys(head_of[h] for h in results))
    cell = {("+".join(streams[h]), head_of[h]): h for h in results}
    video = any("video" in results[h].get("test", {}) for h in results)
    unit = protocol.get("unit_scored") or "sample"
    maps = any(is_map_stream(x) for v in (protocol.get("streams") or {}).values() for x in v)
    lines = [f"**Test accuracy (%) per stream**, per {unit}" + (" / per video" if video else "")
             + (" (map heads read the streams' spatial maps)" if maps else "") + ":", "",
             "| streams | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for sel in selections:
        cells = []
        for head in heads:
            key = cell.get((sel, head))
            test = results[key].get("test", {}) if key else {}
            text = _pm(test.get("accuracy"))
            if video and key:
                text += f" / {_pm((test.get('video') or {}).get('accuracy'))}"
            cells.append(text)
        lines.append(f"| {sel} | " + " | ".join(cells) + " |")
    return lines + [""]


def compare_markdown(protocol: dict, results: dict, names: list[str], confusions: list[dict]) -> str:
    heads = list(results)
    seeds = protocol["seeds"]
    samples = protocol.get("samples") or {}
    lines = [f"# {' vs '.join(heads)} on {protocol['dataset']}", "",
             f"**Protocol.** {protocol['dataset']} ({protocol.get('split_protocol') or 'split stored in the cache'}); "
             f"samples: {', '.join(f'{k} {v}' for k, v in samples.items())}; unit scored: "
             f"{protocol['unit_scored']}{' (video level also shown)' if protocol.get('video_level') else ''}; "
             f"features: {protocol['backbone']}, {protocol.get('sampling')}, streams "
             f"{_streams_words(protocol)}; "
             f"trained on {protocol['trained_on']}, epochs chosen on val, scored once on test; "
             f"mean ± std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); "
             f"cache {protocol['cache']}.", ""]
    lines += _headline(protocol, results)
    lines += _strategy_table(protocol, results)
    if protocol.get("absent_from_training"):
        lines += [f"**Classes absent from training:** {', '.join(protocol['absent_from_training'])} (no training "
                  "sample: no head has an output for them; their test samples count as errors).", ""]
    lines += [f"**Warning:** {w}" for w in protocol.get("warnings") or []] + ([""] if protocol.get("warnings") else [])
    lines += ["| metric (%) | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    rows = [(f"test {label}", "test", None, m) for m, label in METRIC_NAMES.items()]
    if any("video" in results[h].get("test", {}) for h in heads):
        rows += [(f"test {label}, per video", "test", "video", m) for m, label in METRIC_NAMES.items()]
    if any("majority_vote" in results[h].get("test", {}) for h in heads):
        rows.append(("test top-1 accuracy, majority vote", "test", "majority_vote", "accuracy"))
    rows.append(("val top-1 accuracy", "val", None, "accuracy"))
    if any("calibration" in results[h].get("test", {}) for h in heads):
        rows += [("test ECE before calibration", "test", "calibration", "ece_before"),
                 ("test ECE after calibration", "test", "calibration", "ece_after")]
    for label, split, sub, m in rows:
        cells = []
        for h in heads:
            block = results[h].get(split) or {}
            if sub:
                block = block.get(sub) or {}
            cells.append(_pm(block.get(m)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    calibrated = [h for h in heads if "calibration" in results[h].get("test", {})]
    if calibrated:
        lines += ["", "**Calibration** (temperature scaling fitted on each run's val split; ECE: expected "
                  "calibration error of the top-label confidence, 15 bins; accuracy unchanged by it): "
                  + "; ".join(f"{h}: T = {_num(results[h]['test']['calibration']['temperature'])}, test NLL "
                              f"{_num(results[h]['test']['calibration']['nll_before'])} before, "
                              f"{_num(results[h]['test']['calibration']['nll_after'])} after" for h in calibrated)
                  + "."]
    lines += ["", "## Per-class test accuracy (%)", "", "| class | " + " | ".join(heads) + " |",
              "|---|" + "---|" * len(heads)]
    for c in names:
        lines.append(f"| {c} | " + " | ".join(_pm(results[h].get("test", {}).get("per_class_accuracy", {}).get(c))
                                                for h in heads) + " |")
    if confusions:
        lines += ["", "## Confusions that differ most between heads (test, % of the true class, all seeds)", "",
                  "| true → predicted | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for d in confusions:
            lines.append(f"| {d['true']} → {d['predicted']} | " + " | ".join(pct(d["rate"][h]) for h in heads) + " |")
    lines += ["", "## How each head aggregates frames", ""]
    lines += [f"- **{h}**: {protocol['frame_aggregation'][h]}; {protocol['model_selection'][h]}" for h in heads]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, runs: list[RunResult]) -> None:
    cols = []
    for split in ("val", "test"):
        cols += [(split, None, m) for m in METRIC_NAMES]
    if any((r.metrics.get("test") or {}).get("video") for r in runs):
        cols += [("test", "video", m) for m in METRIC_NAMES]
    if any((r.metrics.get("test") or {}).get("majority_vote") for r in runs):
        cols += [("test", "majority_vote", m) for m in METRIC_NAMES]
    if any((r.metrics.get("test") or {}).get("calibration") for r in runs):
        cols += [("test", "calibration", m) for m in CALIBRATION_KEYS]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["head", "streams", "seed", "run", "reused", *("_".join(x for x in c if x) for c in cols),
                    "fit_seconds"])
        for r in runs:
            vals = []
            for split, sub, m in cols:
                block = r.metrics.get(split) or {}
                if sub:
                    block = block.get(sub) or {}
                v = block.get(m)
                vals.append("" if v is None else f"{v:.4f}")
            w.writerow([r.head, "+".join(r.streams), r.seed, str(r.path), int(r.reused), *vals,
                        r.metrics.get("training", {}).get("fit_seconds", "")])
