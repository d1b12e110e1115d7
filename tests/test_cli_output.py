"""What the CLI prints: whole paths, no stray blank lines, --version, harx runs, demo options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from harx.cli import app
from conftest import TINY

runner = CliRunner()
TINY_ARGS = ["--backbone", TINY["backbone"], "--weights", TINY["weights"], "--device", "cpu", "--precision", "fp32"]


def test_version():
    from harx import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"harx {__version__}"


def test_demo_has_the_overwrite_option_it_advertises():
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--overwrite" in result.output


def _harx(args, cwd, env):
    return subprocess.run([sys.executable, "-m", "harx", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def extracted(video_folder, tmp_path_factory):
    """One extraction and one short fit, through the real command in a subprocess (a pipe, not a
    terminal, COLUMNS=60), under a deep HARX_HOME so that every path is longer than a line."""
    home = tmp_path_factory.mktemp("h") / ("a-long-folder-name-" * 4) / "home"
    home.mkdir(parents=True)
    env = dict(os.environ, HARX_HOME=str(home), COLUMNS="60")
    ext = _harx(["extract", "--dataset", "folder", "--root", str(video_folder), *TINY_ARGS], home.parent, env)
    assert ext.returncode == 0, ext.stderr
    fit = _harx(["fit", "meanpool", "--epochs", "2", "--seed", "3"], home.parent, env)
    assert fit.returncode == 0, fit.stderr
    return ext, fit, env, home


def test_paths_are_printed_whole_and_stderr_has_no_blank_first_line(extracted):
    ext, fit, env, home = extracted
    cache = next((home / "features").glob("*.h5"))
    assert f"cache:     {cache}" in ext.stdout.splitlines()
    assert "…" not in ext.stdout + ext.stderr
    assert not ext.stderr.startswith("\n") and not fit.stderr.startswith("\n")
    run_line = next(line for line in fit.stdout.splitlines() if line.startswith("run folder: "))
    run_dir = run_line.removeprefix("run folder: ").rsplit(" (", 1)[0]
    assert os.path.isdir(run_dir) and (home / "features" / "runs") in __import__("pathlib").Path(run_dir).parents


def test_harx_runs_lists_and_filters(extracted, tmp_path):
    ext, fit, env, home = extracted
    out = _harx(["runs"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["head", "streams", "cache", "seed"]
    # the default streams, late fusion: the fused run and the run of each stream it is made of
    assert {r.split()[1] for r in rows if r.startswith("meanpool")} == {"rgb", "motion", "rgb+motion"}
    row = next(r for r in rows if r.split()[:2] == ["meanpool", "rgb+motion"])
    folder = row.split()[-1]
    metrics = json.loads(open(os.path.join(folder, "metrics.json")).read())
    assert f"{100 * metrics['test']['accuracy']:.1f}%" in row and " 3 " in row
    cache = next((home / "features").glob("*.h5"))
    assert _harx(["runs", "--features", str(cache)], tmp_path, env).stdout == out.stdout
    none = _harx(["runs", "--features", "no-such-cache"], tmp_path, env)
    assert none.returncode == 0 and none.stdout == "" and "no runs found" in none.stderr


def test_unfinished_run_is_listed_as_such(extracted, tmp_path):
    from harx.temporal.runs import list_runs

    ext, fit, env, home = extracted
    rows = list_runs([home / "features" / "runs"])
    run = rows[0].path
    broken = tmp_path / "runs" / "x" / run.name
    broken.mkdir(parents=True)
    (broken / "config.json").write_text((run / "config.json").read_text())
    (tmp_path / "runs" / "other").mkdir()
    (tmp_path / "runs" / "other" / "config.json").write_text('{"not": "a harx run"}')
    listed = list_runs([tmp_path / "runs"])
    assert [(r.path, r.finished, r.test_accuracy) for r in listed] == [(broken.resolve(), False, None)]


def test_fit_help_defaults_are_the_heads_own():
    """The per-head defaults quoted in `harx fit --help` are those the head classes run with."""
    import harx.cli as cli
    from harx.temporal import head_options, list_heads
    from harx.temporal.training import TorchHead

    assert set(list_heads()) == set(cli.HEAD_DEFAULTS["lr"])
    for option, per_head in cli.HEAD_DEFAULTS.items():
        for head, value in per_head.items():
            assert head_options(head)[option] == value, (head, option)
    assert TorchHead.auto_steps == cli.AUTO_STEPS
    result = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "250"})
    text = " ".join(result.output.split())
    for option in ("batch_size", "lr", "crop_frames"):
        assert cli._per_head(option) in text
    assert f"about {cli.AUTO_STEPS} optimiser steps" in text and "at least 4" in text
