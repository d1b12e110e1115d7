"""What a person reads: plots and markdown for a run folder and for a comparison.

Plots use matplotlib's object API with the Agg canvas (``Figure`` + ``savefig``), so writing a PNG
never touches pyplot's global backend (a notebook's inline plots keep working).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics import METRIC_NAMES

__all__ = ["plot_curves", "plot_confusions", "plot_compare", "run_markdown", "pct"]


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def plot_curves(path: Path, history: Sequence[dict], title: str, best_epoch: int | None) -> Path:
    """Loss and accuracy per epoch: training crops and validation, best epoch marked; refit dashed."""
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    phases = list(dict.fromkeys(h["phase"] for h in history))   # "select", "refit"; "select:rgb"... (late fusion)
    colours = ("tab:blue", "tab:green", "tab:purple", "tab:brown")
    for k, phase in enumerate(phases):
        rows = [h for h in history if h["phase"] == phase]
        style = "--" if phase.startswith("refit") else "-"
        stream = phase.partition(":")[2]
        tag = (f" {stream}" if stream else "") + (" (refit on train+val)" if phase.startswith("refit") else "")
        train_colour = colours[k % len(colours)] if stream else "tab:blue"
        val_colour = train_colour if stream else "tab:orange"
        ep = [h["epoch"] for h in rows]
        ax_loss.plot(ep, [h["train_loss"] for h in rows], style, color=train_colour, label=f"train crops{tag}")
        ax_acc.plot(ep, [100 * h["train_accuracy"] for h in rows], style, color=train_colour, label=f"train crops{tag}")
        if any(h["val_loss"] is not None for h in rows):
            ax_loss.plot(ep, [h["val_loss"] for h in rows], ":" if stream else style, color=val_colour,
                         label=f"validation{tag}")
            ax_acc.plot(ep, [100 * h["val_accuracy"] for h in rows], ":" if stream else style, color=val_colour,
                        label=f"validation{tag}")
    if best_epoch:
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="gray", ls=":", lw=1)
        ax_acc.annotate(f"best epoch {best_epoch}", (best_epoch, 2), color="gray", fontsize=8, ha="left")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 101))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


def plot_confusions(path: Path, panels: Sequence[tuple[str, dict]], class_names: Sequence[str], title: str) -> Path:
    """One confusion matrix per panel ``(label, metrics)``: row-normalised colour, counts written in."""
    n = len(panels)
    size = 2.0 + 0.45 * len(class_names)
    fig = _figure(size * n + 0.5, size + 1.0)
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (label, m) in zip(axes, panels):
        cm = np.asarray(m["confusion_matrix"], dtype=float)
        rows = cm.sum(1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(cm)):
            for j in range(len(cm)):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, class_names, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true",
               title=f"{label}\naccuracy {pct(m['accuracy'])}%, n={m['n']}")
        ax.title.set_fontsize(9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


def _clipped_err(means: Sequence[float], stds: Sequence[float]) -> np.ndarray:
    """Error bars of ± std that stop at 0 and 100 %: an accuracy cannot leave that range."""
    m, sd = np.asarray(means, float), np.asarray(stds, float)
    return np.vstack([np.minimum(sd, m), np.minimum(sd, 100.0 - m)])


def plot_compare(path: Path, results: dict, class_names: Sequence[str], title: str) -> Path:
    """Bars with seed std error bars (clipped to 0-100 %): summary test metrics per head, and
    per-class test accuracy; a dashed line marks chance (1 / number of classes)."""
    heads = list(results)
    fig = _figure(max(9, 3 + 1.1 * len(class_names) * max(1, len(heads)) / 2), 4.6)
    ax_sum, ax_cls = fig.subplots(1, 2, width_ratios=[1, 2])
    width = 0.8 / max(1, len(heads))
    metrics = list(METRIC_NAMES)
    for k, h in enumerate(heads):
        test = results[h]["test"]
        means = [100 * (test[m]["mean"] or 0) for m in metrics]
        stds = [100 * (test[m]["std"] or 0) for m in metrics]
        x = np.arange(len(metrics)) + (k - (len(heads) - 1) / 2) * width
        ax_sum.bar(x, means, width, yerr=_clipped_err(means, stds), capsize=3, label=h)
        per = results[h]["test"]["per_class_accuracy"]
        cm = [100 * (per[c]["mean"] or 0) for c in class_names]
        cs = [100 * (per[c]["std"] or 0) for c in class_names]
        x = np.arange(len(class_names)) + (k - (len(heads) - 1) / 2) * width
        ax_cls.bar(x, cm, width, yerr=_clipped_err(cm, cs), capsize=2, label=h)
    chance = 100.0 / max(1, len(class_names))
    for ax in (ax_sum, ax_cls):
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"chance ({chance:.0f}%)")
    ax_sum.set_xticks(np.arange(len(metrics)), [METRIC_NAMES[m] for m in metrics], rotation=25, ha="right",
                      fontsize=8)
    ax_sum.set(ylabel="test (%)", title="test metrics, mean ± std over seeds")
    ax_cls.set_xticks(np.arange(len(class_names)), class_names, rotation=30, ha="right", fontsize=8)
    ax_cls.set(ylabel="test accuracy (%)", title="per-class test accuracy")
    ncol = min(len(heads) + 1, 4)          # six columns (heads x streams) need two legend rows
    top = 110 + 11 * -(-(len(heads) + 1) // ncol)
    for ax in (ax_sum, ax_cls):          # head-room above 100 % holds the legend, clear of the bars
        ax.set(ylim=(0, top), yticks=range(0, 101, 20))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", ncol=ncol, frameon=False)
        ax.title.set_fontsize(9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def protocol_lines(p: dict) -> list[str]:
    """The protocol block in words, one fact per line."""
    samples = p.get("samples", {})
    lines = [
        f"- dataset: {p.get('dataset')} ({p.get('split_protocol') or 'split as stored in the cache'})",
        f"- samples: {', '.join(f'{k} {v}' for k, v in samples.items())}; unit scored: {p.get('unit_scored')}"
        + (f"; video level: {p['video_level']}" if p.get("video_level") else ""),
        f"- features: {p.get('backbone')} {p.get('embed_dim')}-d, {p.get('sampling')}",
        f"- frames aggregated: {p.get('frame_aggregation')}",
        f"- trained on: {p.get('trained_on')}; model selection: {p.get('model_selection')}",
        f"- seed: {p.get('seed')}; cache {p.get('cache')} (fingerprint {p.get('cache_fingerprint')})",
    ]
    if p.get("validation_scores"):
        lines.insert(5, f"- validation scores: {p['validation_scores']}")
    if p.get("probabilities"):
        lines.insert(len(lines) - 1, f"- probabilities: {p['probabilities']}")
    if p.get("absent_from_training"):
        lines.append(f"- classes absent from training: {', '.join(p['absent_from_training'])} (no training sample: "
                     "the head has no output for them, so their test samples count as errors)")
    lines += [f"- warning: {w}" for w in p.get("warnings") or []]
    return lines


def calibration_lines(metrics: dict) -> list[str]:
    """The run's temperature and the ECE / NLL of val and test before and after calibration."""
    from .calibration import ECE_BINS, describe

    splits = [(s, metrics[s]["calibration"]) for s in ("val", "test") if (metrics.get(s) or {}).get("calibration")]
    c = metrics.get("calibration") or {}
    lines = ["", "## Calibration", "",
             f"- temperature T = {c['temperature']:.3f}, fitted on {c['fitted_on']} ({c.get('n_samples')} samples, "
             f"{c.get('scores')} scores); T > 1 softens overconfident probabilities, T < 1 sharpens them"
             if c.get("method") == "temperature" else f"- {describe(metrics.get('calibration'))}"]
    if not splits:
        return lines
    lines += [f"- ECE: expected calibration error of the top-label confidence, {ECE_BINS} equal-width bins (%); "
              "NLL: mean negative log-likelihood of the true class (nats), over samples of trained classes"
              + ("; val chose T, so its 'after' is optimistic" if metrics.get("val") else ""), ""]
    nll = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    rows = [["ECE before", *(pct(c["ece_before"], 2) for _, c in splits)],
            ["ECE after", *(pct(c["ece_after"], 2) for _, c in splits)],
            ["NLL before", *(nll(c["nll_before"]) for _, c in splits)],
            ["NLL after", *(nll(c["nll_after"]) for _, c in splits)]]
    return lines + _table(["", *(s for s, _ in splits)], rows)


def run_markdown(metrics: dict, files: dict[str, str]) -> str:
    """``report.md`` of a run: protocol, headline numbers, per-class accuracy, list of files."""
    p = metrics["protocol"]
    names = list(p["class_names"])
    lines = [f"# {metrics['head']} on {p.get('dataset')}, seed {p.get('seed')}", "", "## Protocol", "",
             *protocol_lines(p), "", "## Scores (%)", ""]
    cols = [("val", metrics.get("val")), ("test", metrics.get("test"))]
    extra = []
    for split, m in cols:
        if m and m.get("majority_vote"):
            extra.append((f"{split}, majority vote", m["majority_vote"]))
        if m and m.get("video"):
            extra.append((f"{split}, per video", m["video"]))
    cols = [(s, m) for s, m in cols if m] + extra
    rows = [[METRIC_NAMES[k], *(pct(m[k]) for _, m in cols)] for k in METRIC_NAMES]
    rows.append(["samples", *(str(m["n"]) for _, m in cols)])
    lines += _table(["metric", *(s for s, _ in cols)], rows)
    lines += ["", "## Per-class accuracy (%)", ""]
    absent = set(p.get("absent_from_training") or [])
    rows = [[c + (" (not trained)" if c in absent else ""), *(pct(m["per_class_accuracy"].get(c)) for _, m in cols)]
            for c in names]
    lines += _table(["class", *(s for s, _ in cols)], rows)
    for split, m in cols:
        missed = (m.get("absent_from_training") or {}).get("sample_ids") or []
        if missed:
            lines += ["", f"{split}: {len(missed)} sample(s) of classes absent from training, counted as errors: "
                      + ", ".join(missed[:20]) + (f" ... and {len(missed) - 20} more" if len(missed) > 20 else "")]
    lines += calibration_lines(metrics)
    t = metrics.get("training", {})
    lines += ["", "## Training", "",
              f"- epochs run: {t.get('epochs_run')} of at most {t.get('max_epochs')}; best (kept) epoch: "
              f"{t.get('best_epoch')}{'; stopped early' if t.get('stopped_early') else ''}"
              + (f"; refit on train+val for {t.get('refit_epochs')} epochs" if t.get("refit_epochs") else ""),
              f"- fit time: {t.get('fit_seconds', 0):.1f} s on {t.get('device')} ({t.get('precision')})",
              "", "## Files", ""]
    lines += [f"- `{k}`: {v}" for k, v in files.items()]
    return "\n".join(lines) + "\n"
