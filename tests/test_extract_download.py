"""KTH's download against a local HTTP server: resume, no length, bad hash, no server, rerun."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

import pytest

from harx.extract.archives import marker_path
from harx.extract.datasets.kth import KTH_SOURCE, SEQUENCES_FILE as KTH_SEQUENCES
from harx.extract.download import DownloadEvent, download_dataset, plan_download
from harx.features.errors import DownloadError
from served import closed_port_url as _closed_port_url, serve

KTH_ZIPS = [f.name for f in KTH_SOURCE.files if f.name.endswith(".zip")]


def _zip_bytes(action: str, nested: bool) -> bytes:
    """A small zip with two KTH-named files, flat or inside a folder."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for person in ("01", "02"):
            name = f"person{person}_{action}_d1_uncomp.avi"
            z.writestr(f"{action}/{name}" if nested else name, (name * 3000).encode())
        if nested:
            z.writestr(f"{action}/", b"")
    return buf.getvalue()


def _sequences_text() -> bytes:
    """A synthetic 00sequences.txt with 600 lines, like the real one."""
    actions = ("walking", "jogging", "running", "boxing", "handwaving", "handclapping")
    lines = [f"person{p:02d}_{a}_d{d}\t\tframes\t1-50, 51-100\r\n"
             for p in range(1, 26) for a in actions for d in range(1, 5)]
    return "".join(lines).encode()


@pytest.fixture
def served():
    """A fake KTH server on 127.0.0.1 and the SHA-1s of its zips; shut down afterwards."""
    files = {z: _zip_bytes(z.removesuffix(".zip"), nested=i % 2 == 1)
             for i, z in enumerate(KTH_ZIPS)}
    files[KTH_SEQUENCES] = _sequences_text()
    with serve(files, prefix="/cvap/actions/") as (state, url):
        yield state, url, {z: hashlib.sha1(files[z]).hexdigest() for z in KTH_ZIPS}


def _get(root: Path, url: str, sums: dict, **kw):
    events: list[DownloadEvent] = []
    summary = download_dataset("kth", root, base_urls=[url], checksums=sums, on_progress=events.append,
                               timeout=5, **kw)
    return summary, events


def _assert_unpacked(root: Path) -> None:
    for z in KTH_ZIPS:
        action = z.removesuffix(".zip")
        for person in ("01", "02"):
            video = root / action / f"person{person}_{action}_d1_uncomp.avi"
            assert video.is_file() and video.stat().st_size > 0
        assert marker_path(root / action, z).is_file()
        assert not list((root / action).glob("*.part"))


def test_full_download(tmp_path, served):
    state, url, sums = served
    summary, events = _get(tmp_path, url, sums)
    assert summary.fetched == [*KTH_ZIPS, KTH_SEQUENCES]
    assert summary.unpacked == list(KTH_ZIPS) and summary.reused == []
    assert summary.bytes_downloaded == sum(len(b) for b in state.files.values())
    _assert_unpacked(tmp_path)
    assert (tmp_path / KTH_SEQUENCES).read_bytes() == state.files[KTH_SEQUENCES]
    assert not list(tmp_path.glob("*.part"))
    assert {e.phase for e in events} == {"download", "verify", "unpack"}
    last = [e for e in events if e.name == "walking.zip" and e.phase == "download"][-1]
    assert last.done == last.total == len(state.files["walking.zip"])
    assert all(rng is None for _, rng in state.requests)


def test_rerun_reuses_everything(tmp_path, served):
    state, url, sums = served
    _get(tmp_path, url, sums)
    state.requests.clear()
    summary, events = _get(tmp_path, url, sums)
    assert summary.fetched == [] and summary.unpacked == []
    assert summary.reused == [*KTH_ZIPS, KTH_SEQUENCES] and summary.bytes_downloaded == 0
    assert state.requests == []
    assert {e.phase for e in events} == {"skip"}


def test_resume_after_interruption(tmp_path, served):
    state, url, sums = served
    state.drop_once = {"running.zip"}
    with pytest.raises(DownloadError, match="running.zip.*rerun") as info:
        _get(tmp_path, url, sums)
    assert "\n" not in str(info.value)
    part = tmp_path / "running.zip.part"
    half = len(state.files["running.zip"]) // 2
    assert part.stat().st_size == half
    state.requests.clear()
    summary, _ = _get(tmp_path, url, sums)
    assert ("/cvap/actions/running.zip", f"bytes={half}-") in state.requests
    assert "running.zip" in summary.fetched and "walking.zip" in summary.reused
    later = ("boxing.zip", "handwaving.zip", "handclapping.zip", KTH_SEQUENCES)
    assert summary.bytes_downloaded == (len(state.files["running.zip"]) - half
                                        + sum(len(state.files[n]) for n in later))
    _assert_unpacked(tmp_path)


def test_resume_when_server_ignores_range(tmp_path, served):
    state, url, sums = served
    (tmp_path / "walking.zip.part").write_bytes(b"garbage that must not be kept")
    state.ignore_range = True
    summary, _ = _get(tmp_path, url, sums)
    assert "walking.zip" in summary.fetched
    assert (tmp_path / "walking.zip").read_bytes() == state.files["walking.zip"]


def test_no_content_length(tmp_path, served):
    state, url, sums = served
    state.omit_length = True
    summary, events = _get(tmp_path, url, sums)
    assert len(summary.fetched) == 7
    downloads = [e for e in events if e.phase == "download"]
    assert downloads and all(e.total is None for e in downloads)
    _assert_unpacked(tmp_path)


def test_sha1_mismatch_deletes_file(tmp_path, served):
    _, url, sums = served
    bad = dict(sums, **{"jogging.zip": "0" * 40})
    with pytest.raises(DownloadError, match=r"jogging\.zip has SHA-1 .*deleted.*rerun"):
        _get(tmp_path, url, bad)
    assert not (tmp_path / "jogging.zip").exists()
    assert not (tmp_path / "jogging.zip.part").exists()
    assert (tmp_path / "walking.zip").is_file()  # the good one before it is kept


def test_unreachable_server(tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot reach") as info:
        download_dataset("kth", tmp_path, base_urls=[_closed_port_url(), _closed_port_url()], timeout=2)
    assert time.monotonic() - start < 5
    assert "\n" not in str(info.value)


def test_fallback_url_used(tmp_path, served):
    state, url, sums = served
    summary = download_dataset("kth", tmp_path, base_urls=[_closed_port_url(), url], checksums=sums, timeout=5)
    assert len(summary.fetched) == 7
    assert len(state.requests) == 7  # one per file: the dead base is not retried per file


def test_http_error(tmp_path, served):
    state, url, sums = served
    del state.files["boxing.zip"]
    with pytest.raises(DownloadError, match="HTTP 404"):
        _get(tmp_path, url, sums)


def test_bad_sequences_file(tmp_path, served):
    state, url, sums = served
    state.files[KTH_SEQUENCES] = b"<html>not found</html>"
    with pytest.raises(DownloadError, match="00sequences.txt is not what was expected"):
        _get(tmp_path, url, sums)
    assert not (tmp_path / KTH_SEQUENCES).exists()


def test_no_unpack_and_drop_zips(tmp_path, served):
    _, url, sums = served
    summary, _ = _get(tmp_path / "a", url, sums, unpack_archives=False)
    assert summary.unpacked == [] and not (tmp_path / "a" / "walking").exists()
    summary, _ = _get(tmp_path / "b", url, sums, keep_archives=False)
    _assert_unpacked(tmp_path / "b")
    assert not list((tmp_path / "b").glob("*.zip"))
    summary, _ = _get(tmp_path / "b", url, sums, keep_archives=False)  # rerun: nothing to fetch
    assert summary.fetched == [] and summary.bytes_downloaded == 0


def test_plan(tmp_path, served):
    state, url, sums = served
    empty = plan_download("kth", tmp_path / "new")
    assert empty.bytes_to_fetch > 900_000_000 and empty.disk_needed > empty.bytes_to_fetch
    assert empty.eta_seconds == pytest.approx(empty.bytes_to_fetch / empty.assumed_bandwidth)
    assert {f.state for f in empty.files} == {"absent"}
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "walking.zip.part").write_bytes(b"x" * 1000)
    partial = plan_download("kth", tmp_path / "new")
    assert partial.bytes_to_fetch == empty.bytes_to_fetch - 1000
    assert [f.state for f in partial.files if f.name == "walking.zip"] == ["partial"]
    _get(tmp_path / "done", url, sums)
    done = plan_download("kth", tmp_path / "done")
    assert done.bytes_to_fetch == 0 and done.disk_needed == 0
    assert {f.state for f in done.files} == {"done"}


def test_not_enough_disk(tmp_path, monkeypatch):
    import harx.extract.download as dl

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda _: type("U", (), {"free": 10**6})())
    with pytest.raises(DownloadError, match="not enough disk"):
        download_dataset("kth", tmp_path, base_urls=[_closed_port_url()])


def test_complete_part_file_is_verified_not_refetched(tmp_path, served):
    state, url, sums = served
    (tmp_path / "walking.zip.part").write_bytes(state.files["walking.zip"])
    summary, _ = _get(tmp_path, url, sums)
    assert ("/cvap/actions/walking.zip", f"bytes={len(state.files['walking.zip'])}-") in (
        state.requests)
    assert "walking.zip" in summary.fetched
    assert (tmp_path / "walking.zip").read_bytes() == state.files["walking.zip"]
