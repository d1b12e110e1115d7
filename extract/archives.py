"""Unpacking the archives datasets ship as (zip, RAR), resumably and never half a file.

ZIP is read with the standard library. RAR (UCF101, UCF50 and HMDB51 ship as RAR) is listed with
``rarfile`` (pure Python: it reads the headers itself) and unpacked by one run of an external
extractor over the whole archive, since RAR's compression is not free software and no maintained
pure-Python decoder exists: ``unar`` (Debian/Ubuntu ``apt install unar``, macOS ``brew install
unar``; free, RAR 1.5 to 5), ``unrar`` (RARLAB's), ``bsdtar`` (``libarchive-tools``) or ``7z``
with its RAR codec, each installed one tried in turn until one succeeds (one process for the
whole archive, so solid archives are decoded once). Without one, :func:`unpack` handles archives
whose members are all stored uncompressed in Python; ``harx download`` still asks for an
extractor up front, since the published archives are compressed.

Extractors differ in what they check (bsdtar 3.6 writes a stored RAR member whose CRC is wrong
and exits 0), so every RAR member is checked here against the CRC32 its header records before
it is moved into place. Members go through a staging folder and are moved into place once whole, and a marker beside
them (:func:`marker_path`) lists every file with its size: a rerun that finds them all skips the
archive without opening it, and an interrupted unpack is redone. Member names that would land
outside the destination (``../``, absolute paths) are refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from harx.features.errors import DamagedArchiveError, DownloadError

CHUNK = 1 << 20
#: Extractors tried in this order, each until one succeeds: program, and its arguments with
#: ``{archive}`` and ``{dest}`` filled in.
RAR_TOOLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unar", ("-quiet", "-force-overwrite", "-no-directory", "-output-directory", "{dest}", "{archive}")),
    ("unrar", ("x", "-idq", "-o+", "-y", "{archive}", "{dest}/")),
    ("bsdtar", ("-x", "-f", "{archive}", "-C", "{dest}")),
    ("7z", ("x", "-y", "-bd", "-o{dest}", "{archive}")),
    ("7zz", ("x", "-y", "-bd", "-o{dest}", "{archive}")),
)
RAR_TOOL_HINT = ("RAR archives need an extractor: install unar (Debian/Ubuntu: apt install unar; macOS: brew "
                 "install unar), or unrar, bsdtar (libarchive-tools) or 7z with RAR support, then rerun")
#: what extractors print about a member whose data is damaged (unar "Wrong checksum", 7z "CRC
#: Failed", unrar "checksum error", bsdtar "Truncated")
DAMAGE_WORDS = re.compile(r"checksum|crc|corrupt|truncated|unexpected end", re.IGNORECASE)
LEGACY_MARKER = ".harx_unpacked.json"   # harx <= 0.6 wrote one per KTH action folder

Progress = Callable[[int, int], None]   # (bytes done, bytes total)


def rar_tool() -> str | None:
    """The first RAR extractor on ``PATH`` (see :data:`RAR_TOOLS`; the others are tried after it
    when it fails), or ``None``."""
    return next((shutil.which(name) for name, _ in RAR_TOOLS if shutil.which(name)), None)


def require_rar_tool() -> str:
    """The extractor to use; DownloadError (one line, what to install) when there is none."""
    tool = rar_tool()
    if tool is None:
        raise DownloadError(f"no RAR extractor found on PATH; {RAR_TOOL_HINT}")
    return tool


def marker_path(dest: Path, archive_name: str) -> Path:
    return Path(dest) / f".harx_unpacked.{archive_name}.json"


def unpacked_ok(dest: Path, archive_name: str) -> bool:
    """Whether ``dest`` holds every file the archive's marker lists, with the listed sizes."""
    dest = Path(dest)
    for marker in (marker_path(dest, archive_name), dest / LEGACY_MARKER):
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if marker.name == LEGACY_MARKER and data.get("zip") != archive_name:
            continue
        files = data.get("files")
        return isinstance(files, dict) and all(
            (dest / n).is_file() and (dest / n).stat().st_size == size for n, size in files.items())
    return False


def write_marker(dest: Path, archive_name: str, files: dict[str, int], **extra) -> None:
    marker_path(dest, archive_name).write_text(json.dumps({"archive": archive_name, **extra, "files": files},
                                                          indent=1))


@dataclass(frozen=True)
class _Member:
    """What an archive's header says of one member file."""

    size: int
    crc: int | None      # a RAR member's CRC32 (checked after an extractor ran); None for zip (zipfile checks it)
    stored: bool         # readable in Python: any zip member, a RAR member stored uncompressed and unencrypted


def list_members(archive: Path) -> dict[str, int]:
    """Member file path (``/``-separated, relative) -> size, without folders or macOS debris.

    Raises:
        DownloadError: not a readable zip or RAR, or a member path that leaves the destination.
    """
    return {name: m.size for name, m in _scan(archive).items()}


def _scan(archive: Path) -> dict[str, _Member]:
    """The archive's member files (as :func:`list_members`), from one read of its headers."""
    try:
        with _open(archive) as arc:
            infos = [i for i in arc.infolist() if not i.is_dir()]
            rar = not isinstance(arc, zipfile.ZipFile)
            stored_method = _rar_stored_method() if rar else None
            members = {_safe_name(i.filename, archive):
                       _Member(i.file_size, getattr(i, "CRC", None) if rar else None,
                               not rar or (i.compress_type == stored_method and not i.needs_password()))
                       for i in infos}
            links = [i.filename for i in infos if _is_link(i)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, _rar_errors()) as err:
        raise DamagedArchiveError(f"cannot read archive {archive} ({err})") from None
    if links:
        raise DownloadError(f"{archive} holds a link ({links[0]!r}); a dataset has none, refusing to unpack it")
    return {n: m for n, m in members.items() if not _debris(n)}


def _is_link(info) -> bool:
    """A symbolic link member: rarfile says so; a zip keeps the Unix mode in ``external_attr``."""
    if isinstance(info, zipfile.ZipInfo):
        return (info.external_attr >> 16) & 0o170000 == 0o120000
    return bool(getattr(info, "is_symlink", lambda: False)())


def unpack(archive: Path, dest: Path, *, flatten: bool = False, progress: Progress | None = None) -> dict[str, int]:
    """Unpack ``archive`` into ``dest`` (by base name when ``flatten``), write its marker, and
    return what it holds: relative path -> size.

    Raises:
        DamagedArchiveError: an archive that cannot be read or unpacked whole (the caller may
            delete it and fetch it again).
        DownloadError: two members with one base name under ``flatten``, a member that is a
            link or lies outside ``dest``, no RAR extractor, or a destination that cannot be written.
    """
    archive, dest = Path(archive), Path(dest)
    scanned = _scan(archive)
    members = {name: m.size for name, m in scanned.items()}
    targets = _targets(members, flatten, archive)
    stage = dest / f".harx-unpacking-{archive.name}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        if _is_rar(archive) and (rar_tool() is not None or not all(m.stored for m in scanned.values())):
            _unpack_with_tool(archive, stage)
            if progress is not None:
                progress(sum(members.values()), sum(members.values()))
        else:
            _unpack_in_python(archive, stage, members, progress)
        files = {}
        for name, target in targets.items():
            source = stage / name
            if source.is_symlink() or not source.is_file() or source.stat().st_size != members[name]:
                raise DamagedArchiveError(f"unpacking {archive} gave no whole {name}")
            if scanned[name].crc is not None and _crc32(source) != scanned[name].crc:
                raise DamagedArchiveError(f"{archive} is damaged: {name} fails its CRC check")
            (dest / target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest / target)
            files[target] = members[name]
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    write_marker(dest, archive.name, files)
    return files


def _targets(members: dict[str, int], flatten: bool, archive: Path) -> dict[str, str]:
    if not flatten:
        return {n: n for n in members}
    targets: dict[str, str] = {}
    for name in members:
        base = PurePosixPath(name).name
        if base in targets.values():
            raise DownloadError(f"{archive} holds two files named {base}; delete it and rerun to fetch it again")
        targets[name] = base
    return targets


def _unpack_in_python(archive: Path, stage: Path, members: dict[str, int], progress: Progress | None) -> None:
    total, done = sum(members.values()), 0
    try:
        with _open(archive) as arc:
            for info in arc.infolist():
                if info.is_dir():
                    continue
                name = _safe_name(info.filename, archive)
                if name not in members:
                    continue
                target = stage / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with arc.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                done += members[name]
                if progress is not None:
                    progress(done, total)
    except OSError as err:      # the destination (a full disk), not the archive
        raise DownloadError(f"cannot write what {archive} holds into {stage.parent} ({err.strerror or err}); "
                            "free some disk or choose another --root, then rerun") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, _rar_errors()) as err:
        raise DamagedArchiveError(f"cannot unpack {archive} ({err})") from None


def _unpack_with_tool(archive: Path, stage: Path) -> None:
    """Unpack with each installed extractor in turn until one succeeds (unar 1.10 cannot parse
    some RAR5 archives that bsdtar or unrar can)."""
    require_rar_tool()
    failures, damaged = [], False
    for name, template in RAR_TOOLS:
        tool = shutil.which(name)
        if tool is None:
            continue
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        args = [a.format(archive=str(archive.resolve()), dest=str(stage.resolve())) for a in template]
        done = subprocess.run([tool, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace")
        if done.returncode == 0:
            return
        lines = (done.stdout + done.stderr).strip().splitlines()
        hurt = [line.strip() for line in lines if DAMAGE_WORDS.search(line)]
        damaged = damaged or bool(hurt)
        failures.append(f"{name} exit {done.returncode}: {(hurt or lines or ['no message'])[-1]}")
    if damaged:     # an extractor found a member that fails its checksum: the archive, not the tool
        raise DamagedArchiveError(f"{archive} is damaged ({'; '.join(failures)})")
    raise DownloadError(f"cannot unpack {archive} ({'; '.join(failures)}); if the archive is damaged, delete it and "
                        f"rerun; else install another extractor (unrar, bsdtar from libarchive-tools) and rerun")


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _safe_name(raw: str, archive: Path) -> str:
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or raw.startswith("/") or ":" in parts[0]:
        raise DownloadError(f"{archive} holds a member outside its folder ({raw!r}); refusing to unpack it")
    return "/".join(parts)


def _debris(name: str) -> bool:
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")


def _is_rar(archive: Path) -> bool:
    with open(archive, "rb") as f:
        return f.read(6) == b"Rar!\x1a\x07"


def _open(archive: Path):
    if _is_rar(archive):
        import rarfile

        return rarfile.RarFile(archive)
    return zipfile.ZipFile(archive)


def _rar_stored_method() -> int:
    import rarfile

    return rarfile.RAR_M0


def _rar_errors() -> type[Exception]:
    import rarfile

    return rarfile.Error
