"""``harx download DATASET``: fetch, verify and unpack a dataset from its published source.

A dataset's adapter declares its source (:class:`extract.datasets.DownloadSource`: base URLs and
files); this module fetches it the same way for every dataset (standard library HTTP):

- Each file downloads to ``NAME.part`` and is renamed only once verified, so an interrupted run
  resumes with an HTTP ``Range`` request; a server that answers 200 instead of 206 restarts it.
  A server may send no Content-Length, so progress totals may be ``None``.
- Files with a published SHA-1 are checked against it; a mismatching file is deleted, so a rerun
  fetches it again. Where none is published (UCF101, UCF50, HMDB51), an archive is checked by
  the CRC of every member as it unpacks and a plain file by the adapter's ``check``.
- Archives are kept by default (``keep_archives=True``): a damaged folder can then be unpacked
  again without the slow download. ``keep_archives=False`` deletes each once unpacked.
- Unpacking (:mod:`extract.archives`) leaves a marker listing the files and sizes; a rerun that
  finds them all skips the archive without re-hashing, so reruns cost seconds. RAR archives need
  an extractor (unar, unrar, bsdtar or 7z); its absence is said before anything is fetched.
- Base URLs are tried in order when one cannot be reached (not on HTTP errors: the server answered).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harx.features.errors import DamagedArchiveError, DownloadError

from .archives import require_rar_tool, unpack, unpacked_ok, write_marker
from .datasets import DownloadSource, RemoteFile, get_dataset

#: Bandwidth assumed by :func:`plan_download` for its time estimate (bytes per second).
ASSUMED_BANDWIDTH = 10_000_000
SOCKET_TIMEOUT_S = 60.0
CHUNK = 1 << 20
PHASES = ("download", "verify", "unpack", "skip")


@dataclass(frozen=True)
class DownloadEvent:
    """Progress of one file in one phase; ``total`` is ``None`` when the server does not say."""

    name: str
    done: int
    total: int | None
    phase: str


@dataclass(frozen=True)
class PlannedFile:
    """One file of the plan; ``state``: ``done``, ``partial`` (a ``.part`` exists), ``absent``."""

    name: str
    approx_bytes: int
    present_bytes: int
    state: str


@dataclass
class DownloadPlan:
    """What a download still needs: bytes to fetch, disk to hold them, a time estimate."""

    dataset: str
    root: Path
    files: list[PlannedFile]
    bytes_present: int
    bytes_to_fetch: int
    disk_needed: int
    disk_free: int
    assumed_bandwidth: int
    eta_seconds: float
    note: str = ""

    @property
    def enough_disk(self) -> bool:
        return self.disk_free >= self.disk_needed


@dataclass
class DownloadSummary:
    """What a download did: files fetched over the network, reused from disk, and unpacked."""

    root: Path
    fetched: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0


Progress = Callable[[DownloadEvent], None]


def _noop(_: DownloadEvent) -> None:
    """Default progress sink."""


def download_source(dataset: str) -> DownloadSource:
    """The source the adapter of ``dataset`` declares.

    Raises:
        UnknownNameError: no such dataset. DownloadError: a dataset harx cannot download.
    """
    source = get_dataset(dataset).source
    if source is None:
        from .datasets import DATASETS

        known = ", ".join(n for n, d in sorted(DATASETS.items()) if d.source is not None)
        raise DownloadError(f"harx cannot download {dataset!r} (it has no published source); downloadable: {known}")
    return source


# ----------------------------------------------------------------------------------- planning


def plan_download(dataset: str, root: Path, *, source: DownloadSource | None = None,
                  assumed_bandwidth: int = ASSUMED_BANDWIDTH) -> DownloadPlan:
    """What ``download_dataset(dataset, root)`` would fetch, the disk it needs, a time estimate.

    Disk: each missing file plus, for an archive not yet unpacked, its unpacked size. Sizes are
    approximate (:attr:`RemoteFile.approx_bytes`).
    """
    source = source or download_source(dataset)
    root = Path(root)
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DownloadError(f"--root {root}: {existing} is a file; give a folder to download {dataset} into")
    files = [_plan_file(root, f) for f in source.files]
    to_fetch = sum(max(p.approx_bytes - p.present_bytes, 0) for p in files if p.state != "done")
    unpack_needed = sum(f.unpacked_bytes or f.approx_bytes for f in source.files
                        if f.is_archive and not _unpacked(root, f))
    return DownloadPlan(dataset=dataset, root=root, files=files, bytes_present=sum(p.present_bytes for p in files),
                        bytes_to_fetch=to_fetch, disk_needed=to_fetch + unpack_needed, disk_free=_disk_free(root),
                        assumed_bandwidth=assumed_bandwidth, eta_seconds=to_fetch / max(assumed_bandwidth, 1),
                        note=source.note)


def _plan_file(root: Path, f: RemoteFile) -> PlannedFile:
    """State of one file on disk: done (final file or unpacked archive), partial or absent."""
    final, part = root / f.name, root / f"{f.name}.part"
    if final.is_file():
        return PlannedFile(f.name, f.approx_bytes, final.stat().st_size, "done")
    if f.is_archive and _unpacked(root, f):
        return PlannedFile(f.name, f.approx_bytes, 0, "done")
    if part.is_file():
        return PlannedFile(f.name, f.approx_bytes, part.stat().st_size, "partial")
    return PlannedFile(f.name, f.approx_bytes, 0, "absent")


def _disk_free(root: Path) -> int:
    """Free bytes on the disk that holds ``root`` (or its nearest existing parent)."""
    probe = root.resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _check_disk(plan: DownloadPlan) -> None:
    """Refuse to start a download that clearly cannot fit."""
    if not plan.enough_disk:
        raise DownloadError(
            f"not enough disk under {plan.root}: {plan.dataset} needs about {plan.disk_needed / 1e9:.1f} GB "
            f"more, {plan.disk_free / 1e9:.1f} GB free; free space or choose another --root")


# ----------------------------------------------------------------------------------- download


def download_dataset(dataset: str, root: Path, *, source: DownloadSource | None = None,
                     base_urls: list[str] | None = None, on_progress: Progress | None = None,
                     unpack_archives: bool = True, verify: bool = True, keep_archives: bool = True,
                     checksums: dict[str, str] | None = None, timeout: float = SOCKET_TIMEOUT_S) -> DownloadSummary:
    """Fetch the files of ``dataset``'s source into ``root``, verify them, unpack its archives.

    Safe to rerun: finished files are reused, ``.part`` files resume, unpacked archives are
    skipped. ``base_urls`` replaces the source's (tests, mirrors); ``checksums`` its SHA-1s.

    Raises:
        DownloadError: network failure, HTTP error, SHA-1 mismatch, damaged archive, no RAR
            extractor (before anything is fetched) or too little disk.
    """
    start = time.monotonic()
    source = source or download_source(dataset)
    root = Path(root)
    if unpack_archives:
        require_extractor(dataset, root, source=source)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create folder {root} ({err.strerror or err}); choose another --root") from None
    _check_disk(plan_download(dataset, root, source=source))
    fetcher = _Fetcher(dataset, list(base_urls or source.base_urls), timeout, on_progress or _noop)
    summary = DownloadSummary(root=root)
    for f in source.files:
        sha1 = (f.sha1 if checksums is None else checksums.get(f.name)) if verify else None
        _get_file(root, f, sha1, fetcher, summary, unpack_archives, keep_archives)
    summary.bytes_downloaded = fetcher.bytes_downloaded
    summary.seconds = time.monotonic() - start
    return summary


def require_extractor(dataset: str, root: str | Path, *, source: DownloadSource | None = None) -> None:
    """DownloadError (one line: what to install) when a RAR archive of ``dataset`` remains to be
    unpacked under ``root`` and no extractor is installed: said before anything is fetched."""
    source = source or download_source(dataset)
    if source.rar_to_unpack(lambda f: _unpacked(Path(root), f)):
        require_rar_tool()


def _get_file(root: Path, f: RemoteFile, sha1: str | None, fetcher: _Fetcher, summary: DownloadSummary,
              unpack_archives: bool, keep_archives: bool) -> None:
    """Make one file available: skip an unpacked archive, else reuse or fetch it, then unpack."""
    if unpack_archives and f.is_archive and _unpacked(root, f):
        fetcher.progress(DownloadEvent(f.name, 0, None, "skip"))
        summary.reused.append(f.name)
        return
    final = root / f.name
    if final.is_file() and _problem(final, f, sha1, fetcher.progress) is None:
        fetcher.progress(DownloadEvent(f.name, final.stat().st_size, final.stat().st_size, "skip"))
        summary.reused.append(f.name)
    else:
        final.unlink(missing_ok=True)  # a stale or damaged copy: fetch it again
        part = fetcher.fetch(f.name, root)
        problem = _problem(part, f, sha1, fetcher.progress)
        if problem is not None:
            part.unlink()
            raise DownloadError(f"downloaded {f.name} {problem}; deleted the bad file, rerun `harx download "
                                f"{fetcher.dataset}` to fetch it again")
        part.replace(final)
        summary.fetched.append(f.name)
    if unpack_archives and f.is_archive:
        try:
            _unpack_file(root, f, fetcher.progress)
        except DamagedArchiveError as err:
            final.unlink(missing_ok=True)
            raise DownloadError(f"{err}; deleted {f.name}: rerun `harx download {fetcher.dataset}` to fetch it "
                                "again") from None
        summary.unpacked.append(f.name)
        if not keep_archives:
            final.unlink()


def _problem(path: Path, f: RemoteFile, sha1: str | None, progress: Progress) -> str | None:
    """Why ``path`` is not the file ``f`` (a SHA-1 mismatch, a failed ``check``), or ``None``."""
    if sha1 is not None:
        got = _sha1(path, f.name, progress)
        if got != sha1.lower():
            return f"has SHA-1 {got}, expected {sha1}"
    if f.check is not None:
        why = f.check(path)
        if why is not None:
            return f"is not what was expected ({why})"
    return None


def _unpacked(root: Path, f: RemoteFile) -> bool:
    """Whether the archive ``f`` is unpacked under ``root`` (every inner archive too)."""
    if f.inner_to is not None:
        return unpacked_ok(root / f.inner_to, f.name)
    return f.unpack_to is not None and unpacked_ok(root / f.unpack_to, f.name)


def _unpack_file(root: Path, f: RemoteFile, progress: Progress) -> None:
    """Unpack ``f``; an archive of archives (``inner_to``) goes through a staging folder, each
    inner archive is unpacked then deleted, and the outer marker lists what they hold."""
    def report(done: int, total: int, name: str = f.name) -> None:
        progress(DownloadEvent(name, done, total, "unpack"))

    if f.inner_to is None:
        unpack(root / f.name, root / f.unpack_to, flatten=f.flatten, progress=report)
        return
    stage, dest = root / f".harx-inner-{f.name}", root / f.inner_to
    inner = unpack(root / f.name, stage, progress=report)
    files: dict[str, int] = {}
    for name in sorted(inner):
        if name.lower().endswith((".rar", ".zip")):
            held = unpack(stage / name, dest, progress=lambda d, t, n=name: report(d, t, n))
            files.update(held)
            (stage / name).unlink()
    shutil.rmtree(stage, ignore_errors=True)
    write_marker(dest, f.name, files)


class _Fetcher:
    """HTTP GET with resume into ``NAME.part``; remembers which base URL answered."""

    def __init__(self, dataset: str, bases: list[str], timeout: float, progress: Progress):
        self.dataset = dataset
        self.bases = [b if b.endswith("/") else b + "/" for b in bases]
        self.timeout = timeout
        self.progress = progress
        self.bytes_downloaded = 0

    def fetch(self, name: str, root: Path) -> Path:
        """Download ``name`` to ``root/NAME.part`` (resuming it) and return that path."""
        part = root / f"{name}.part"
        errors: list[str] = []
        while self.bases:
            url = self.bases[0] + name
            try:
                self._get(url, name, part)
                return part
            except _Unreachable as err:
                errors.append(f"{url}: {err}")
                if len(self.bases) == 1:
                    break
                self.bases.pop(0)  # the next base for this and every later file
        raise DownloadError(f"cannot reach the {self.dataset} server ({'; '.join(errors)}); check the "
                            "network or give a --mirror, then rerun (downloads resume)")

    def _get(self, url: str, name: str, part: Path, allow_range: bool = True) -> None:
        """One GET: append to ``part`` after a 206, start over after a 200."""
        offset = part.stat().st_size if allow_range and part.is_file() else 0
        headers = {"User-Agent": "harx"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:
                return  # the .part is already whole; verification decides
            raise DownloadError(f"HTTP {err.code} {err.reason} for {url}; check the URL or "
                                "rerun later") from None
        except http.client.HTTPException as err:
            raise DownloadError(f"bad HTTP answer from {url} ({err!r}); rerun later or pass "
                                "give a --mirror") from None
        except (urllib.error.URLError, OSError) as err:
            raise _Unreachable(getattr(err, "reason", err)) from None
        with resp:
            if offset and resp.status == 206 and _range_start(resp) != offset:
                resp.close()
                return self._get(url, name, part, allow_range=False)
            if resp.status != 206:
                offset = 0  # the server ignored Range: restart from scratch
            self._copy(resp, name, part, offset, url)

    def _copy(self, resp: http.client.HTTPResponse, name: str, part: Path, offset: int,
              url: str) -> None:
        """Stream the body into ``part`` from ``offset``, reporting progress."""
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        with open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            self.progress(DownloadEvent(name, done, total, "download"))
            while True:
                chunk = self._read(resp, name, done, url)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                self.bytes_downloaded += len(chunk)
                self.progress(DownloadEvent(name, done, total, "download"))
        if total is not None and done < total:
            raise DownloadError(f"download of {name} from {url} stopped at {done} of {total} "
                                f"bytes; rerun `harx download {self.dataset}` to resume it")

    def _read(self, resp: http.client.HTTPResponse, name: str, done: int, url: str) -> bytes:
        """One chunk; a dropped connection or timeout becomes a resumable DownloadError."""
        try:
            return resp.read(CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(f"download of {name} from {url} interrupted after {done} bytes "
                                f"({err!r}); rerun `harx download {self.dataset}` to resume it") from None


class _Unreachable(Exception):
    """The server could not be contacted (DNS, refused, timeout): try the fallback URL."""


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes N-M/T``."""
    match = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None



def _sha1(path: Path, name: str, progress: Progress) -> str:
    """Hex SHA-1 of a file, reporting progress as phase ``verify``."""
    digest, done, total = hashlib.sha1(), 0, path.stat().st_size
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(DownloadEvent(name, done, total, "verify"))
    return digest.hexdigest()



__all__ = ["ASSUMED_BANDWIDTH", "DownloadEvent", "DownloadPlan", "DownloadSummary", "PlannedFile",
           "download_dataset", "download_source", "plan_download"]
