"""``harx download kth``: fetch, verify and unpack the KTH actions dataset (standard library only).

What ends up under ``root``: the six zips, ``00sequences.txt``, and one folder per action holding
its AVIs (the layout :func:`extract.datasets.kth.kth` reads). Choices, and why:

- Each file downloads to ``NAME.part`` and is renamed only once verified, so an interrupted run
  resumes with an HTTP ``Range`` request; a server that answers 200 instead of 206 restarts it.
  The KTH server may send no Content-Length, so progress totals may be ``None``.
- The zips are checked against their published SHA-1 (:data:`KTH_SHA1`); a mismatching file is
  deleted, so a rerun fetches it again. ``00sequences.txt`` has no published hash: it must parse.
- Zips are kept by default (``keep_zips=True``, about 1 GB): a damaged action folder can then be
  unpacked again without the slow download. ``keep_zips=False`` deletes each zip once unpacked.
- An unpacked folder holds a marker (:data:`UNPACK_MARKER`) listing its files and sizes; a rerun
  that finds them all skips that action without re-hashing, so reruns cost seconds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harx.extract.datasets.kth import parse_sequences
from harx.features.errors import DatasetFormatError, DownloadError

KTH_BASE_URL = "http://www.nada.kth.se/cvap/actions/"
#: Newer address of the same files; tried when :data:`KTH_BASE_URL` cannot be reached.
KTH_FALLBACK_URL = "https://www.csc.kth.se/cvap/actions/"
KTH_ACTIONS: tuple[str, ...] = ("walking", "jogging", "running", "boxing", "handwaving",
                                "handclapping")
KTH_ZIPS: tuple[str, ...] = tuple(f"{a}.zip" for a in KTH_ACTIONS)
KTH_SEQUENCES = "00sequences.txt"
#: Published SHA-1 of the zips (as listed by the vipy project).
KTH_SHA1: dict[str, str] = {
    "walking.zip": "a3e81537271a0ab4576591774baa38c2d97b7e3a",
    "jogging.zip": "21943bdbcef9dad106db0d74661e49eaeaa15a25",
    "running.zip": "da83bb313edfd4455fffdda6263696fa10d43c6f",
    "boxing.zip": "adb36ed9c29c846d44d2ba15f348bd115c951bbd",
    "handwaving.zip": "0792f7cd69f7f895a205c08ac212ddaa7177e370",
    "handclapping.zip": "d3b81261aa822ef63d0d1523f945bfaff27814d2",
}
#: APPROXIMATE sizes in bytes, for planning only (never used to check a download).
KTH_APPROX_BYTES: dict[str, int] = {
    "walking.zip": 242_000_000, "jogging.zip": 168_000_000, "running.zip": 149_000_000,
    "boxing.zip": 194_000_000, "handwaving.zip": 218_000_000, "handclapping.zip": 176_000_000,
    KTH_SEQUENCES: 40_000,
}
#: Bandwidth assumed by :func:`plan_kth_download` for its time estimate (bytes per second).
ASSUMED_BANDWIDTH = 10_000_000
SOCKET_TIMEOUT_S = 60.0
CHUNK = 1 << 20
UNPACK_MARKER = ".harx_unpacked.json"
MIN_SEQUENCE_LINES = 590  # the real file lists 600 videos (one of them *missing*)
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

    root: Path
    files: list[PlannedFile]
    bytes_present: int
    bytes_to_fetch: int
    disk_needed: int
    disk_free: int
    assumed_bandwidth: int
    eta_seconds: float

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


# ----------------------------------------------------------------------------------- planning


def plan_kth_download(root: Path, *, assumed_bandwidth: int = ASSUMED_BANDWIDTH) -> DownloadPlan:
    """What ``download_kth(root)`` would fetch, the disk it needs, and a time estimate.

    Disk: each missing zip plus its unpacked AVIs (already compressed, so about the zip's size
    again). Sizes are approximate (:data:`KTH_APPROX_BYTES`).
    """
    root = Path(root)
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DownloadError(f"--root {root}: {existing} is a file; give a folder to download KTH into")
    files = [_plan_file(root, name) for name in (*KTH_ZIPS, KTH_SEQUENCES)]
    to_fetch = sum(max(f.approx_bytes - f.present_bytes, 0) for f in files if f.state != "done")
    unpack_needed = sum(f.approx_bytes for f in files
                        if f.name in KTH_ZIPS and not _unpacked_ok(root, _action(f.name)))
    present = sum(f.present_bytes for f in files)
    return DownloadPlan(root=root, files=files, bytes_present=present, bytes_to_fetch=to_fetch,
                        disk_needed=to_fetch + unpack_needed, disk_free=_disk_free(root),
                        assumed_bandwidth=assumed_bandwidth,
                        eta_seconds=to_fetch / max(assumed_bandwidth, 1))


def _plan_file(root: Path, name: str) -> PlannedFile:
    """State of one file on disk: done (final file or unpacked action), partial or absent."""
    approx = KTH_APPROX_BYTES[name]
    final, part = root / name, root / f"{name}.part"
    if final.is_file():
        return PlannedFile(name, approx, final.stat().st_size, "done")
    if name in KTH_ZIPS and _unpacked_ok(root, _action(name)):
        return PlannedFile(name, approx, 0, "done")
    if part.is_file():
        return PlannedFile(name, approx, part.stat().st_size, "partial")
    return PlannedFile(name, approx, 0, "absent")


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
            f"not enough disk under {plan.root}: KTH needs about {plan.disk_needed / 1e9:.1f} GB "
            f"more, {plan.disk_free / 1e9:.1f} GB free; free space or choose another --root")


# ----------------------------------------------------------------------------------- download


def download_kth(root: Path, *, base_url: str = KTH_BASE_URL,
                 fallback_url: str | None = KTH_FALLBACK_URL,
                 on_progress: Progress | None = None, unpack: bool = True, verify: bool = True,
                 keep_zips: bool = True, checksums: dict[str, str] | None = None,
                 timeout: float = SOCKET_TIMEOUT_S) -> DownloadSummary:
    """Fetch the six KTH zips and ``00sequences.txt`` into ``root``, verify, unpack per action.

    Safe to rerun: finished files are reused, ``.part`` files resume, unpacked actions are
    skipped. ``checksums`` replaces :data:`KTH_SHA1` (tests, mirrors). ``fallback_url`` is tried
    when ``base_url`` cannot be reached (not on HTTP errors, which the server did answer).

    Raises:
        DownloadError: network failure, HTTP error, SHA-1 mismatch, bad zip or too little disk.
    """
    start = time.monotonic()
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create folder {root} ({err.strerror or err}); choose another --root") from None
    _check_disk(plan_kth_download(root))
    fetcher = _Fetcher([base_url] + ([fallback_url] if fallback_url else []), timeout,
                       on_progress or _noop)
    sums = KTH_SHA1 if checksums is None else checksums
    summary = DownloadSummary(root=root)
    for name in KTH_ZIPS:
        _get_zip(root, name, sums.get(name) if verify else None, fetcher, summary, unpack,
                 keep_zips)
    _get_sequences(root, fetcher, summary)
    summary.bytes_downloaded = fetcher.bytes_downloaded
    summary.seconds = time.monotonic() - start
    return summary


def _get_zip(root: Path, name: str, sha1: str | None, fetcher: _Fetcher,
             summary: DownloadSummary, unpack: bool, keep_zips: bool) -> None:
    """Make one action available: skip if unpacked, else reuse or fetch the zip, then unpack."""
    action = _action(name)
    if unpack and _unpacked_ok(root, action):
        fetcher.progress(DownloadEvent(name, 0, None, "skip"))
        summary.reused.append(name)
        return
    final = root / name
    if final.is_file() and _mismatch(final, name, sha1, fetcher.progress) is None:
        fetcher.progress(DownloadEvent(name, final.stat().st_size, final.stat().st_size, "skip"))
        summary.reused.append(name)
    else:
        final.unlink(missing_ok=True)  # a stale or damaged copy: fetch it again
        part = fetcher.fetch(name, root)
        got = _mismatch(part, name, sha1, fetcher.progress)
        if got is not None:
            part.unlink()
            raise DownloadError(
                f"SHA-1 of {name} is {got}, expected {sha1}; deleted the bad file, "
                "rerun `harx download kth` to fetch it again")
        part.replace(final)
        summary.fetched.append(name)
    if unpack:
        _unpack(final, root / action, sha1, fetcher.progress)
        summary.unpacked.append(name)
        if not keep_zips:
            final.unlink()


def _get_sequences(root: Path, fetcher: _Fetcher, summary: DownloadSummary) -> None:
    """Reuse or fetch ``00sequences.txt``; it has no published hash, so it must parse instead."""
    final = root / KTH_SEQUENCES
    if final.is_file() and _sequences_problem(final) is None:
        fetcher.progress(DownloadEvent(KTH_SEQUENCES, final.stat().st_size,
                                       final.stat().st_size, "skip"))
        summary.reused.append(KTH_SEQUENCES)
        return
    part = fetcher.fetch(KTH_SEQUENCES, root)
    problem = _sequences_problem(part)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"downloaded {KTH_SEQUENCES} is not the KTH annotation file "
                            f"({problem}); deleted it, rerun `harx download kth` to retry")
    part.replace(final)
    summary.fetched.append(KTH_SEQUENCES)


def _sequences_problem(path: Path) -> str | None:
    """Why ``path`` is not a plausible ``00sequences.txt``, or ``None`` if it is."""
    try:
        entries = parse_sequences(path.read_text(encoding="utf-8", errors="replace"))
    except DatasetFormatError as err:
        return str(err)
    if len(entries) < MIN_SEQUENCE_LINES:
        return f"{len(entries)} video lines, expected about 600"
    return None


class _Fetcher:
    """HTTP GET with resume into ``NAME.part``; remembers which base URL answered."""

    def __init__(self, bases: list[str], timeout: float, progress: Progress):
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
        raise DownloadError(f"cannot reach the KTH server ({'; '.join(errors)}); check the "
                            "network or pass another base URL, then rerun (downloads resume)")

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
                                "another base URL") from None
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
                                "bytes; rerun `harx download kth` to resume it")

    def _read(self, resp: http.client.HTTPResponse, name: str, done: int, url: str) -> bytes:
        """One chunk; a dropped connection or timeout becomes a resumable DownloadError."""
        try:
            return resp.read(CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(f"download of {name} from {url} interrupted after {done} bytes "
                                f"({err!r}); rerun `harx download kth` to resume it") from None


class _Unreachable(Exception):
    """The server could not be contacted (DNS, refused, timeout): try the fallback URL."""


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes N-M/T``."""
    match = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------ verify/unpack


def _mismatch(path: Path, name: str, sha1: str | None, progress: Progress) -> str | None:
    """The SHA-1 of ``path`` if it differs from ``sha1``; ``None`` if equal or not checked."""
    if sha1 is None:
        return None
    got = _sha1(path, name, progress)
    return None if got == sha1.lower() else got


def _sha1(path: Path, name: str, progress: Progress) -> str:
    """Hex SHA-1 of a file, reporting progress as phase ``verify``."""
    digest, done, total = hashlib.sha1(), 0, path.stat().st_size
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(DownloadEvent(name, done, total, "verify"))
    return digest.hexdigest()


def _action(zip_name: str) -> str:
    return zip_name.removesuffix(".zip")


def _unpacked_ok(root: Path, action: str) -> bool:
    """Whether ``root/action`` holds every file its marker lists, with the listed sizes."""
    marker = root / action / UNPACK_MARKER
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(files, dict) and all(
        (root / action / n).is_file() and (root / action / n).stat().st_size == size
        for n, size in files.items())


def _members(archive: zipfile.ZipFile, zip_path: Path) -> dict[str, zipfile.ZipInfo]:
    """File members by base name: zips may hold them flat or inside a folder."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
        if info.is_dir() or not base or base.startswith("._") or "__MACOSX" in info.filename:
            continue
        if base in members:
            raise DownloadError(f"{zip_path} holds two files named {base}; "
                                "delete the zip and rerun to fetch it again")
        members[base] = info
    return members


def _unpack(zip_path: Path, dest: Path, sha1: str | None, progress: Progress) -> None:
    """Extract the zip's files flat into ``dest``, then write the marker listing them."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _members(archive, zip_path)
            total = sum(i.file_size for i in members.values())
            dest.mkdir(parents=True, exist_ok=True)
            done = 0
            for base, info in sorted(members.items()):
                _extract_one(archive, info, dest / base)
                done += info.file_size
                progress(DownloadEvent(zip_path.name, done, total, "unpack"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise DownloadError(f"cannot unpack {zip_path} ({err}); delete it and rerun "
                            "`harx download kth` to fetch it again") from None
    marker = {"zip": zip_path.name, "sha1": sha1,
              "files": {b: i.file_size for b, i in sorted(members.items())}}
    (dest / UNPACK_MARKER).write_text(json.dumps(marker, indent=1))


def _extract_one(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write one member unless already there with its size; via a temp name, so never half."""
    if target.is_file() and target.stat().st_size == info.file_size:
        return
    tmp = target.with_name(target.name + ".part")
    with archive.open(info) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    tmp.replace(target)


__all__ = ["ASSUMED_BANDWIDTH", "KTH_APPROX_BYTES", "KTH_BASE_URL", "KTH_FALLBACK_URL",
           "KTH_SEQUENCES", "KTH_SHA1", "KTH_ZIPS", "DownloadEvent", "DownloadPlan",
           "DownloadSummary", "PlannedFile", "download_kth", "plan_kth_download"]
