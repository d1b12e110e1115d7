"""UCF101, UCF50 and HMDB51 downloads against a local HTTP server, from RAR and zip archives built
here in the layout the real ones have; then their adapters index what was unpacked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import harx.extract.archives as archives
from harx.extract.archives import marker_path, rar_tool, unpack, unpacked_ok
from harx.extract.datasets import create_dataset
from harx.extract.download import download_dataset, plan_download
from harx.features.errors import DownloadError
from archives import rar_bytes, zip_bytes
from layouts import UCF_CLASSES, ucf_file, write_hmdb_splits, write_ucf_lists
from served import serve

CLIP = b"\x00\x00\x01\xba" + bytes(range(256)) * 8     # bytes, not a video: downloads do not decode


@pytest.fixture(params=[*(name for name, _ in archives.RAR_TOOLS), "python"])
def rar_route(request, monkeypatch):
    """Unpack RAR with one installed extractor alone (they differ in what they check), or with
    none installed, in Python for stored members."""
    real_which = archives.shutil.which
    if request.param != "python" and real_which(request.param) is None:
        pytest.skip(f"{request.param} is not installed")
    if request.param == "python":
        monkeypatch.setattr("harx.extract.download.require_rar_tool", lambda: "none")
    monkeypatch.setattr(archives.shutil, "which", lambda name: real_which(name) if name == request.param else None)
    return request.param


def _files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ucf101_archives(tmp_path: Path) -> dict[str, bytes]:
    lists = _files_of(write_ucf_lists(tmp_path / "lists" / "ucfTrainTestlist").parent)
    clips = {f"UCF-101/{ucf_file(c, g, 1)}": CLIP for c in UCF_CLASSES for g in (1, 8, 22)}
    return {"UCF101.rar": rar_bytes(clips), "UCF101TrainTestSplits-RecognitionTask.zip": zip_bytes(lists)}


def test_ucf101_downloads_unpacks_and_indexes(tmp_path, rar_route):
    with serve(_ucf101_archives(tmp_path)) as (state, url):
        root = tmp_path / "ucf101"
        summary = download_dataset("ucf101", root, base_urls=[url], timeout=5)
        assert summary.fetched == summary.unpacked == ["UCF101.rar", "UCF101TrainTestSplits-RecognitionTask.zip"]
        assert (root / "UCF-101" / ucf_file("HandstandPushups", 8, 1)).read_bytes() == CLIP
        index = create_dataset("ucf101", root)
        assert len(index.samples) == 9 and index.folds == ["split1", "split2", "split3"]
        assert {s.folds[1] for s in index.samples if "_g08_" in s.sample_id} == {"test"}
        asked = len(state.requests)
        again = download_dataset("ucf101", root, base_urls=[url], timeout=5)
        assert again.fetched == [] and again.reused == summary.fetched and len(state.requests) == asked
    assert plan_download("ucf101", root).bytes_to_fetch == 0


def test_hmdb51_unpacks_the_rar_of_rars(tmp_path, rar_route):
    splits = _files_of(write_hmdb_splits(tmp_path / "s" / "testTrainMulti_7030_splits", sources=2, clips=3).parent)
    inner = {f"{cls}.rar": rar_bytes({f"{cls}/Movie_{s}_{cls}_u_nm_np1_fr_goo_{c}.avi": CLIP
                                      for s in range(2) for c in range(3)}) for cls in ("drink", "jump")}
    with serve({"hmdb51_org.rar": rar_bytes(inner), "test_train_splits.rar": rar_bytes(splits)}) as (_, url):
        root = tmp_path / "hmdb"
        download_dataset("hmdb51", root, base_urls=[url], timeout=5, keep_archives=False)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["hmdb51", "testTrainMulti_7030_splits"]
    assert not list(root.rglob("*.rar")) and not list(root.glob(".harx-*"))   # inner archives and staging gone
    assert unpacked_ok(root / "hmdb51", "hmdb51_org.rar")
    index = create_dataset("hmdb51", root)
    assert len(index.samples) == 12 and not index.missing and index.class_names == ["drink", "jump"]
    assert plan_download("hmdb51", root).bytes_to_fetch == 0        # the outer archive is gone, its work is not


def test_ucf50_downloads_and_makes_group_folds(tmp_path, rar_route):
    clips = {f"UCF50/{c}/v_{c}_g{g:02d}_c01.avi": CLIP for c in ("Biking", "Diving") for g in range(1, 26)}
    clips["UCF50/Biking/notes.avi"] = CLIP                   # no group in its name: reported, not extracted
    with serve({"UCF50.rar": rar_bytes(clips)}) as (_, url):
        download_dataset("ucf50", tmp_path / "u", base_urls=[url], timeout=5)
    index = create_dataset("ucf50", tmp_path / "u")
    assert len(index.folds) == 25 and index.folds[0] == "g01" and len(index.samples) == 50
    assert index.unlisted == ["Biking/notes.avi"]
    for k, name in enumerate(index.folds):
        parts = {s.sample_id: s.folds[k] for s in index.samples}
        assert {p for i, p in parts.items() if f"_g{k + 1:02d}_" in i} == {"test"}
        assert set(parts.values()) == {"train", "val", "test"}
    five = create_dataset("ucf50", tmp_path / "u", protocol="5fold")
    assert five.folds == [f"fold{k}" for k in range(1, 6)] and five.cache_name == "ucf50-5fold"
    assert sum(p == "test" for s in five.samples for p in s.folds[:1]) == 10     # groups 1-5 of 2 classes


def test_no_rar_extractor_is_one_line_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(archives.shutil, "which", lambda name: None)
    with serve({"UCF50.rar": b"x"}) as (state, url):
        with pytest.raises(DownloadError, match="no RAR extractor.*install unar") as info:
            download_dataset("ucf50", tmp_path, base_urls=[url], timeout=5)
    assert "\n" not in str(info.value) and state.requests == []


def test_damaged_rar_is_refused_and_nothing_half_is_left(tmp_path, rar_route):
    good = rar_bytes({"A/v_A_g01_c01.avi": CLIP})
    bad = bytearray(good)
    bad[-40] ^= 0xFF                                          # a byte of the member: its CRC no longer matches
    (tmp_path / "bad.rar").write_bytes(bytes(bad))
    with pytest.raises(DownloadError, match="bad.rar") as info:
        unpack(tmp_path / "bad.rar", tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out" / "A").exists() and not marker_path(tmp_path / "out", "bad.rar").exists()


def test_a_damaged_download_is_deleted_and_the_rerun_fetches_it_again(tmp_path, rar_route):
    clips = {f"UCF50/Biking/v_Biking_g{g:02d}_c01.avi": CLIP for g in range(1, 26)}
    good = rar_bytes(clips)
    bad = bytearray(good)
    bad[-40] ^= 0xFF
    root = tmp_path / "u"
    with serve({"UCF50.rar": bytes(bad)}) as (_, url):
        with pytest.raises(DownloadError, match="UCF50.rar.*(CRC|checksum).*; deleted UCF50.rar: rerun") as info:
            download_dataset("ucf50", root, base_urls=[url], timeout=5)
    assert "\n" not in str(info.value) and not (root / "UCF50.rar").exists()
    with serve({"UCF50.rar": good}) as (state, url):
        summary = download_dataset("ucf50", root, base_urls=[url], timeout=5)
    assert summary.fetched == ["UCF50.rar"] and len(list((root / "UCF50" / "Biking").glob("*.avi"))) == 25


@pytest.mark.parametrize("kind, name", [("zip", "../evil.avi"), ("zip", "/etc/evil.avi"), ("zip", "a/../../evil.avi"),
                                        ("rar", "../evil.avi"), ("rar", "a/../../evil.avi")])
def test_members_outside_the_folder_are_refused(tmp_path, kind, name):
    (tmp_path / f"x.{kind}").write_bytes((zip_bytes if kind == "zip" else rar_bytes)({name: b"x"}))
    with pytest.raises(DownloadError, match="outside its folder"):
        unpack(tmp_path / f"x.{kind}", tmp_path / "out")
    assert not (tmp_path / "evil.avi").exists()


def test_a_link_member_is_refused(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("A/v_A_g01_c01.avi")
        info.external_attr = (0o120777 << 16)                 # a symbolic link, to /etc/passwd
        z.writestr(info, "/etc/passwd")
    (tmp_path / "l.zip").write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match="holds a link"):
        unpack(tmp_path / "l.zip", tmp_path / "out")
    assert not (tmp_path / "out" / "A").exists()


def test_cli_download_with_a_mirror(tmp_path):
    if rar_tool() is None:
        pytest.skip("no RAR extractor installed (apt install unar)")
    clips = {f"UCF50/Biking/v_Biking_g{g:02d}_c01.avi": CLIP for g in range(1, 26)}
    with serve({"UCF50.rar": rar_bytes(clips)}) as (_, url):
        done = subprocess.run([sys.executable, "-m", "harx", "download", "ucf50", "--root", str(tmp_path / "u"), "--mirror", url, "-y"],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no checksum is published for UCF50" in done.stdout
    assert f"Next: harx extract --dataset ucf50 --root {tmp_path / 'u'}" in done.stdout
    assert len(list((tmp_path / "u" / "UCF50" / "Biking").glob("*.avi"))) == 25


def _fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{body}\n")
    (folder / name).chmod(0o755)


def test_a_failing_extractor_hands_over_to_the_next(tmp_path, monkeypatch):
    """unar 1.10 cannot parse some RAR5 archives that unrar or bsdtar unpack: each installed
    extractor is tried in turn, and when all fail the error names each failure on one line."""
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "unar", 'echo "Archive parsing failed!" >&2; exit 1')
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "a.rar").write_bytes(rar_bytes({"A/v_A_g01_c01.avi": CLIP}))
    with pytest.raises(DownloadError, match=r"unar exit 1: Archive parsing failed!.*install another") as info:
        unpack(tmp_path / "a.rar", tmp_path / "out")
    assert "\n" not in str(info.value)
    # unrar x -idq -o+ -y ARCHIVE DEST/ : here a script that unpacks the stored members with rarfile
    _fake_tool(bin_dir, "unrar", f'"{sys.executable}" -c "import rarfile, sys; '
                                 f'rarfile.RarFile(sys.argv[1]).extractall(sys.argv[2])" "$5" "$6"')
    assert unpack(tmp_path / "a.rar", tmp_path / "out") == {"A/v_A_g01_c01.avi": len(CLIP)}
    assert (tmp_path / "out" / "A" / "v_A_g01_c01.avi").read_bytes() == CLIP
