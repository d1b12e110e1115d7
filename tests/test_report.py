"""Plots a person reads: error bars stay within 0-100 %, chance is marked, legends agree."""

from __future__ import annotations

import numpy as np

from harx.temporal.report import _clipped_err, plot_compare, plot_curves


def test_error_bars_stop_at_0_and_100_percent():
    err = _clipped_err([98.0, 3.0, 50.0], [5.0, 5.0, 5.0])
    assert np.allclose(err, [[5.0, 3.0, 5.0], [2.0, 5.0, 5.0]])


def _results(names):
    def agg(mean, std):
        return {"mean": mean, "std": std}
    return {h: {"test": {"accuracy": agg(a, 0.1), "mean_class_accuracy": agg(a, 0.1), "macro_f1": agg(a, 0.1),
                         "per_class_accuracy": {c: agg(1.0, 0.2) for c in names}}}
            for h, a in (("vote", 0.7), ("lstm", 0.98))}


def test_compare_plot_marks_chance_and_clips_bars(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    names = ["a", "b", "c", "d"]
    lines, bars = [], []
    real_axhline, real_bar = Axes.axhline, Axes.bar
    monkeypatch.setattr(Axes, "axhline", lambda self, y, **kw: lines.append((y, kw.get("label"))) or real_axhline(self, y, **kw))
    monkeypatch.setattr(Axes, "bar", lambda self, x, h, *a, **kw: bars.append((np.asarray(h), kw["yerr"])) or real_bar(self, x, h, *a, **kw))
    plot_compare(tmp_path / "c.png", _results(names), names, "t")
    assert (tmp_path / "c.png").stat().st_size > 0
    assert [y for y, _ in lines] == [25.0, 25.0] and "chance" in lines[0][1]
    for heights, err in bars:
        assert (heights - err[0] >= -1e-9).all() and (heights + err[1] <= 100 + 1e-9).all()


def test_curves_legends_name_the_training_data_alike(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    labels = []
    real_plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **kw: labels.append(kw.get("label")) or real_plot(self, *a, **kw))
    history = [{"phase": "select", "epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "val_loss": 1.0,
                "val_accuracy": 0.4} for e in (1, 2, 3)]
    plot_curves(tmp_path / "curves.png", history, "t", best_epoch=2)
    assert labels.count("train crops") == 2 and labels.count("validation") == 2
