"""The folder/manifest adapter: layouts, manifests, splits, and the errors users will meet."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from harx.extract.datasets import DATASETS, create_dataset
from harx.extract.datasets.folder import (
    VIDEO_EXTENSIONS, folder, read_manifest, sample_ids, split_groups, split_stratified,
)
from harx.features.errors import DatasetFormatError, DatasetNotFoundError, InvalidOptionError
from videos import write_video  # tests/ is on sys.path under pytest (rootdir-relative)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """One real 8-frame video, copied wherever a test needs a file (encoding once is faster)."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 8, (32, 24), stamp=False)


def put(clip: Path, *paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, path)


def write_csv(path: Path, text: str, *, newline: str = "\n", bom: bool = False) -> Path:
    data = text.replace("\n", newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def splits_of_groups(index) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for sample in index.samples:
        seen[sample.group].add(sample.split)
    return seen


# ----------------------------------------------------------------------------- folder layout

def test_registered():
    assert "folder" in DATASETS


def test_folder_layout_classes_ids_and_ignored_files(tmp_path, clip):
    root = tmp_path / "data"
    put(clip, root / "walk" / "b.mp4", root / "walk" / "a.AVI", root / "box" / "x.mkv",
        root / "box" / "nested" / "y.webm", root / "Zed" / "z.mov")
    (root / "walk" / ".hidden.mp4").write_bytes(b"x")
    (root / "walk" / "notes.txt").write_text("not a video")
    (root / ".git").mkdir()
    put(clip, root / ".git" / "v.mp4", root / "box" / ".cache" / "w.mp4", root / "loose.mp4")
    (root / "empty").mkdir()

    index = folder(root)
    assert index.class_names == ["Zed", "box", "walk"]  # plain sorted: same on every machine
    ids = sorted(s.sample_id for s in index.samples)
    assert ids == ["Zed/z", "box/nested/y", "box/x", "walk/a", "walk/b"]
    for sample in index.samples:
        assert sample.path.is_absolute() and sample.path.is_file()
        assert sample.video_id == sample.sample_id and sample.group is None
        assert sample.scenario is None and sample.frame_range is None
        assert sample.label == sample.sample_id.split("/")[0]
    notes = " ".join(index.options["notes"])
    assert "'empty'" in notes and "loose.mp4" in notes
    assert index.unit == "video" and index.missing == []
    assert index.options["source"] == "folder"


def test_symlinked_folders_followed_without_looping(tmp_path, clip):
    put(clip, tmp_path / "store" / "v.mp4")
    root = tmp_path / "root"
    (root / "walk").mkdir(parents=True)
    (root / "walk" / "linked").symlink_to(tmp_path / "store")
    (root / "walk" / "loop").symlink_to(root / "walk")
    ids = [s.sample_id for s in folder(root).samples]
    assert ids == ["walk/linked/v"]


def test_extensions_cover_common_containers():
    assert {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".3gp", ".mts", ".m2ts", ".ts", ".vob"} <= VIDEO_EXTENSIONS


def test_camcorder_and_stream_recordings_are_found_and_decode(tmp_path):
    """AVCHD camcorders write .MTS/.M2TS (MPEG-TS, H.264 with B-frames): found, whatever the
    case of the extension, and every frame decodes."""
    from conftest import TINY
    from harx.extract import make_config, run_extract

    import av

    from videos import make_frames

    for k in range(3):
        for label, ext in (("wave", ".MTS"), ("clap", ".m2ts")):
            path = tmp_path / "clips" / label / f"g{k}_{label}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(path), "w", format="mpegts") as container:   # H.264 with B-frames, as camcorders
                stream = container.add_stream("libx264", rate=25)
                stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
                for rgb in make_frames(10, (64, 48), seed=k + 3 * len(label)):
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                container.mux(stream.encode(None))
    summary = run_extract(make_config(dataset="folder", root=tmp_path / "clips", out=tmp_path / "c.h5", **TINY))
    assert summary.samples_new == 6 and summary.failed == [] and summary.frames == 60


def test_same_stem_two_containers_keeps_ids_unique(tmp_path, clip):
    put(clip, tmp_path / "a" / "v.mp4", tmp_path / "a" / "v.avi", tmp_path / "a" / "w.mp4")
    ids = sorted(s.sample_id for s in folder(tmp_path).samples)
    assert ids == ["a/v.avi", "a/v.mp4", "a/w"]


def test_missing_and_empty_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        folder(tmp_path / "nope")
    (tmp_path / "walk").mkdir()
    (tmp_path / "walk" / "readme.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"no videos found under .*<class>/<video>"):
        folder(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="needs a root"):
        folder(None)
    with pytest.raises(DatasetNotFoundError, match="is a file"):
        folder(tmp_path / "walk" / "readme.txt")


def test_bad_fractions(tmp_path, clip):
    put(clip, tmp_path / "a" / "v.mp4")
    with pytest.raises(InvalidOptionError, match="got 0.6 \\+ 0.5"):
        folder(tmp_path, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(InvalidOptionError, match="-0.1"):
        folder(tmp_path, val_fraction=-0.1)


def test_stratified_split_without_groups(tmp_path, clip):
    for label in ("a", "b"):
        put(clip, *(tmp_path / label / f"{i:02d}.mp4" for i in range(20)))
    index = folder(tmp_path, seed=3)
    for label in ("a", "b"):
        counts = {s: sum(1 for x in index.samples if x.label == label and x.split == s)
                  for s in ("train", "val", "test")}
        assert counts == {"train": 14, "val": 3, "test": 3}
    assert index.split_protocol.startswith("stratified by class, seeded 3")
    assert index.options["seed"] == 3 and index.options["val_fraction"] == 0.15
    again = folder(tmp_path, seed=3)
    assert [s.split for s in again.samples] == [s.split for s in index.samples]
    other = folder(tmp_path, seed=4)
    assert [s.split for s in other.samples] != [s.split for s in index.samples]


def test_tiny_classes_go_to_train_and_are_named(tmp_path, clip):
    put(clip, tmp_path / "one" / "a.mp4", tmp_path / "two" / "a.mp4", tmp_path / "two" / "b.mp4",
        *(tmp_path / "three" / f"{i}.mp4" for i in range(3)))
    index = folder(tmp_path)
    by = defaultdict(list)
    for s in index.samples:
        by[s.label].append(s.split)
    assert by["one"] == ["train"] and by["two"] == ["train", "train"]
    assert sorted(by["three"]) == ["test", "train", "val"]
    assert "all in train: one, two" in index.split_protocol


def test_split_helpers_edge_cases():
    assignment, tiny = split_stratified({"x": "a", "y": "a"}, 0.15, 0.15, 0)
    assert set(assignment.values()) == {"train"} and tiny == ["a"]
    assert set(split_groups({"g1": 5}, 0.15, 0.15, 0).values()) == {"train"}
    two = split_groups({"g1": 5, "g2": 5}, 0.15, 0.15, 0)
    assert sorted(two.values()) == ["test", "train"]
    three = split_groups({"g1": 50, "g2": 1, "g3": 1}, 0.15, 0.15, 0)
    assert sorted(three.values()) == ["test", "train", "val"]
    no_val = split_groups({f"g{i}": 1 for i in range(10)}, 0.0, 0.3, 0)
    assert "val" not in no_val.values()


# ----------------------------------------------------------------------------- manifests

def grouped_manifest(tmp_path: Path, clip: Path, n_groups: int = 10, per_group: int = 4) -> Path:
    lines = ["path,label,group"]
    for g in range(n_groups):
        for i in range(per_group):
            rel = f"videos/g{g}_{i}.mp4"
            put(clip, tmp_path / rel)
            lines.append(f"{rel},{'ab'[i % 2]},person{g}")
    return write_csv(tmp_path / "list.csv", "\n".join(lines) + "\n")


def test_manifest_groups_never_cross_splits(tmp_path, clip):
    manifest = grouped_manifest(tmp_path, clip)
    index = folder(manifest=manifest, seed=1)
    assert all(len(s) == 1 for s in splits_of_groups(index).values())
    assert {s.split for s in index.samples} == {"train", "val", "test"}
    assert index.split_protocol.startswith("by group, seeded 1")
    assert index.class_names == ["a", "b"]
    assert index.root == tmp_path
    assert index.samples[0].sample_id == "videos/g0_0"
    again = folder(manifest=manifest, seed=1)
    assert [s.split for s in again.samples] == [s.split for s in index.samples]
    assigned = [frozenset(g for g, s in splits_of_groups(folder(manifest=manifest, seed=k)).items()
                          if "test" in s) for k in range(5)]
    assert len(set(assigned)) > 1  # the seed matters


def test_manifest_group_split_hits_fractions_in_videos(tmp_path, clip):
    index = folder(manifest=grouped_manifest(tmp_path, clip, n_groups=20, per_group=2),
                   val_fraction=0.2, test_fraction=0.2)
    counts = {s: sum(1 for x in index.samples if x.split == s) for s in ("train", "val", "test")}
    assert counts == {"train": 24, "val": 8, "test": 8}


def test_manifest_found_as_root_csv_or_root_manifest(tmp_path, clip):
    put(clip, tmp_path / "v" / "a.mp4", tmp_path / "v" / "b.mp4")
    write_csv(tmp_path / "manifest.csv", "path,label\nv/a.mp4,x\nv/b.mp4,y\n")
    assert folder(tmp_path).options["source"] == "manifest"  # manifest.csv beats the layout
    assert folder(tmp_path / "manifest.csv").class_names == ["x", "y"]
    index = create_dataset("folder", tmp_path / "manifest.csv", seed=None)
    assert index.options["seed"] == 0


def test_manifest_given_splits_aliases_and_extra_columns(tmp_path, clip):
    put(clip, *(tmp_path / f"{n}.mp4" for n in "abcd"))
    write_csv(tmp_path / "m.csv", "Label,PATH,split,scenario,notes\n"
              "x,a.mp4,Training,d1,\nx,b.mp4,validation,d2,hi\ny,c.mp4,TEST,,\ny,d.mp4,val,,\n")
    index = folder(tmp_path / "m.csv")
    assert [s.split for s in index.samples] == ["train", "val", "test", "val"]
    assert [s.scenario for s in index.samples] == ["d1", "d2", None, None]
    assert index.split_protocol.startswith("given by the split column")
    rows = read_manifest(tmp_path / "m.csv")
    assert rows[1].extra == {"scenario": "d2", "notes": "hi"} and rows[1].line == 3


def test_given_split_crossing_groups_is_noted(tmp_path, clip):
    put(clip, tmp_path / "a.mp4", tmp_path / "b.mp4")
    write_csv(tmp_path / "m.csv", "path,label,group,split\na.mp4,x,p1,train\nb.mp4,x,p1,test\n")
    assert "1 group(s) appear in more than one split" in folder(tmp_path / "m.csv").split_protocol


def test_mixed_split_is_an_error_naming_the_line(tmp_path, clip):
    put(clip, tmp_path / "a.mp4", tmp_path / "b.mp4")
    write_csv(tmp_path / "m.csv", "path,label,split\na.mp4,x,train\n\nb.mp4,x,\n")
    with pytest.raises(DatasetFormatError, match=r"line 4: no split for 'b.mp4'"):
        folder(tmp_path / "m.csv")


@pytest.mark.parametrize("text, message", [
    ("path,label\na.mp4,x\nb.mp4,x,extra\n", r"line 3: expected 2 fields"),
    ("path,label,split\na.mp4,x,holdout\n", r"line 2: split 'holdout' is not one of"),
    ("path,label\n,x\n", r"line 2: empty path"),
    ("path,label\na.mp4,\n", r"line 2: empty label"),
    ("file,class\na.mp4,x\n", r"line 1: header .* lacks column\(s\) path, label"),
    ("path,label,label\na.mp4,x,y\n", r"column\(s\) label appear twice"),
    ("path,label\n", r"lists no videos"),
    ("\n\n", r"is empty"),
    ('path,label\n"a.mp4"x,y\n', r"line 2: .*quoting"),
])
def test_bad_manifest_rows(tmp_path, clip, text, message):
    put(clip, tmp_path / "a.mp4")
    with pytest.raises(DatasetFormatError, match=message):
        folder(write_csv(tmp_path / "m.csv", text))


def test_manifest_not_utf8(tmp_path):
    (tmp_path / "m.csv").write_bytes("path,label\nvidéo.mp4,x\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="not UTF-8"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_duplicate_row(tmp_path, clip):
    put(clip, tmp_path / "a.mp4")
    write_csv(tmp_path / "m.csv", "path,label\na.mp4,x\n./a.mp4,y\n")
    with pytest.raises(DatasetFormatError, match="line 3: './a.mp4' is already listed on line 2"):
        folder(tmp_path / "m.csv")


def test_crlf_bom_blank_lines_quotes_and_odd_names(tmp_path, clip):
    names = ["with space.mp4", "comma,name.mp4", "bang!!!!.mp4", "ünïcødé 動画.mp4",
             'quote"d.mp4']
    for name in names:
        put(clip, tmp_path / "vids" / name)
    body = "path,label,group\r\n\r\n" + "".join(
        '"vids/{}",{},g{}\r\n'.format(name.replace('"', '""'), "ab"[i % 2], i)
        for i, name in enumerate(names)) + "\r\n"
    manifest = write_csv(tmp_path / "m.csv", body, bom=True)
    index = folder(manifest)
    assert sorted(s.path.name for s in index.samples) == sorted(names)
    assert index.missing == [] and len({s.sample_id for s in index.samples}) == len(names)
    assert "vids/ünïcødé 動画" in {s.sample_id for s in index.samples}


def test_relative_absolute_and_parent_paths(tmp_path, clip):
    outside = tmp_path / "elsewhere" / "far.mp4"
    put(clip, tmp_path / "list" / "near.mp4", tmp_path / "sibling" / "s.mp4", outside)
    manifest = write_csv(tmp_path / "list" / "m.csv",
                         f"path,label\nnear.mp4,a\n../sibling/s.mp4,a\n{outside},b\n")
    index = folder(manifest=manifest)
    paths = [s.path for s in index.samples]
    assert paths == [tmp_path / "list" / "near.mp4", tmp_path / "sibling" / "s.mp4", outside]
    assert index.samples[0].sample_id == "near"
    assert index.samples[2].sample_id == outside.with_suffix("").as_posix()
    # relative paths are read from the manifest's folder, not from the working directory
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert folder(manifest=Path("list/m.csv")).samples[0].path == paths[0]
    finally:
        os.chdir(cwd)


def test_missing_files_are_listed_not_fatal(tmp_path, clip):
    put(clip, tmp_path / "a.mp4")
    write_csv(tmp_path / "m.csv", "path,label\na.mp4,x\ngone.mp4,x\nlost/b.avi,y\n")
    index = folder(tmp_path / "m.csv")
    assert [s.sample_id for s in index.samples] == ["a"]
    assert index.missing == ["gone.mp4", "lost/b.avi"]
    assert index.class_names == ["x", "y"]  # label indices stay stable on a partial download
    assert any("no video on disk: y" in note for note in index.options["notes"])


def test_all_missing_is_an_error(tmp_path):
    write_csv(tmp_path / "m.csv", "path,label\ngone.mp4,x\n")
    with pytest.raises(DatasetNotFoundError, match="none of the 1 videos listed"):
        folder(tmp_path / "m.csv")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        folder(manifest=tmp_path / "absent.csv")


def test_sample_ids_outside_root():
    root = Path("/data/root")
    assert sample_ids([Path("/data/root/a/b.mp4"), Path("/x/c.avi")], root) == ["a/b", "/x/c"]


def test_partial_download_keeps_splits_and_ids(tmp_path, clip):
    lines = ["path,label,group"] + [f"v{i}.mp4,{'ab'[i % 2]},g{i // 2}" for i in range(24)]
    write_csv(tmp_path / "m.csv", "\n".join(lines) + "\n")
    put(clip, *(tmp_path / f"v{i}.mp4" for i in range(24)))
    full = {s.sample_id: s.split for s in folder(tmp_path / "m.csv").samples}
    for i in range(0, 24, 3):
        (tmp_path / f"v{i}.mp4").unlink()
    partial = folder(tmp_path / "m.csv")
    assert len(partial.missing) == 8
    assert {s.sample_id: s.split for s in partial.samples}.items() <= full.items()


# ----------------------------------------------------------------------------- real clips

def realdata() -> Path:
    return Path(os.environ.get("HARX_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.mark.realdata
@pytest.mark.parametrize("name, n_classes", [("ucf101", 3), ("hmdb51", 10)])
def test_real_clips_index_as_folder_dataset(name, n_classes):
    root = realdata() / name
    if not root.is_dir():
        pytest.skip(f"{root} absent (set HARX_REALDATA)")
    index = folder(root)
    assert len(index.class_names) == n_classes == len(index.samples)
    assert index.class_names == sorted(p.name for p in root.iterdir() if p.is_dir())
    assert all(s.path.is_file() and s.split == "train" for s in index.samples)
    assert "all in train" in index.split_protocol

