"""A new dataset is one adapter file: its function, the options that decide the cache's numbers
and its download source, registered in one call. This module is such a file (``toyset``), and
extract, the CLI, the default cache name, the settings hash and download all follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harx.cli import app
from harx.extract import make_config, run_extract
from harx.extract.datasets import DATASETS, DatasetIndex, DownloadSource, RemoteFile, VideoSample, register_dataset
from harx.features.errors import CacheMismatchError, InvalidOptionError
from archives import zip_bytes
from conftest import TINY
from served import serve
from videos import write_video

TOY_SOURCE = DownloadSource(base_urls=("http://127.0.0.1:9/",), files=(RemoteFile("toy.zip", 1000, unpack_to="."),))


def toyset(root: Path | None = None, *, test_every: int = 3, tag: str = "a") -> DatasetIndex:
    """A toy dataset: ROOT/<class>/<video>, every test_every-th video of a class is test."""
    samples = []
    for cls in sorted(p.name for p in Path(root).iterdir() if p.is_dir()):
        for k, video in enumerate(sorted((Path(root) / cls).glob("*.mp4"))):
            samples.append(VideoSample(f"{cls}/{video.name}", video, cls,
                                       "test" if k % test_every == 0 else "train", group=video.stem))
    return DatasetIndex("toyset", Path(root), sorted({s.label for s in samples}), samples,
                        f"every {test_every}th video of a class is test", options={"test_every": test_every, "tag": tag})


@pytest.fixture
def registered():
    """``toyset`` registered as its adapter file would (test_every decides the numbers; tag does not)."""
    register_dataset(settings=("test_every",), source=TOY_SOURCE)(toyset)
    yield DATASETS["toyset"]
    DATASETS.pop("toyset")


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    for c, cls in enumerate(("clap", "wave")):
        for k in range(3):
            write_video(root / cls / f"{cls}{k}.mp4", n_frames=6, size=(32, 24), seed=10 * c + k)
    return root


def test_extract_follows_the_adapter(registered, toy_root, harx_home):
    s = run_extract(make_config(dataset="toyset", root=toy_root, dataset_options={"test_every": 2}, streams="rgb",
                                **TINY))
    assert s.out.parent == harx_home / "features" and s.out.name.startswith("toyset-test_efficientnet-")
    assert s.samples_new == 6 and s.split_protocol == "every 2th video of a class is test"
    again = run_extract(make_config(dataset="toyset", root=toy_root, dataset_options={"test_every": 2, "tag": "b"},
                                    streams="rgb", **TINY))
    assert again.nothing_to_do                               # tag is not a setting: the cache still fits
    with pytest.raises(CacheMismatchError):                   # test_every is: another split, refused
        run_extract(make_config(dataset="toyset", root=toy_root, dataset_options={"test_every": 3},
                                streams="rgb", **TINY))


def test_the_cli_lists_and_takes_its_options(registered, toy_root, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["datasets"])
    assert "toyset: A toy dataset" in listed.output and "test_every=3, tag=a; download: harx download toyset" in (
        listed.output)
    done = runner.invoke(app, ["extract", "-d", "toyset", "--root", str(toy_root), "-o", "test_every=2",
                               "--out", str(tmp_path / "t.h5"), "--streams", "rgb", "--backbone", "test_efficientnet",
                               "--weights", "none", "--device", "cpu", "--precision", "fp32"])
    assert done.exit_code == 0, done.output
    assert "every 2th video" in done.output
    bad = runner.invoke(app, ["extract", "-d", "toyset", "--root", str(toy_root), "-o", "test_every=two"])
    assert bad.exit_code == 1 and "option test_every takes an integer, got 'two'" in bad.output
    with pytest.raises(InvalidOptionError, match="does not take option"):
        from harx.extract.datasets import create_dataset

        create_dataset("toyset", toy_root, unit="video")


def test_download_follows_its_source(registered, tmp_path):
    from harx.extract.download import download_dataset

    with serve({"toy.zip": zip_bytes({"clap/a.mp4": b"1", "wave/b.mp4": b"2"})}) as (_, url):
        summary = download_dataset("toyset", tmp_path, base_urls=[url], timeout=5)
    assert summary.unpacked == ["toy.zip"] and (tmp_path / "wave" / "b.mp4").read_bytes() == b"2"


def test_option_types_are_read_however_the_adapter_writes_them():
    """``Optional[int]`` and plain ``int`` in a module without ``from __future__ import annotations``."""
    from typing import Optional

    from harx.extract.datasets import Dataset

    def plain(root, *, seed: int = 0, share: Optional[float] = None, name: "str | None" = None):
        """A dataset written without the future import."""

    ds = Dataset("plain", plain, (), None)
    assert ds.parse_option("seed=3") == ("seed", 3)
    assert ds.parse_option("share=0.5") == ("share", 0.5)
    assert ds.parse_option("name=x") == ("name", "x")
    with pytest.raises(InvalidOptionError, match="option seed takes an integer, got 'x'"):
        ds.parse_option("seed=x")
