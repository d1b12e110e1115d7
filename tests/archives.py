"""Small archives that tests build: zip (standard library) and RAR 4 (written here, members stored).

No free tool writes RAR, so :func:`rar_bytes` writes the RAR 4.x format itself, with members
stored uncompressed (method 0x30), Windows-style ``\\`` paths and the header CRCs, as a real
UCF101/HMDB51 archive has them. ``rarfile`` and ``unar`` both read it.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

RAR_MARK = b"Rar!\x1a\x07\x00"
_DOS_TIME = (2012 - 1980) << 25 | 1 << 21 | 1 << 16   # 2012-01-01 00:00


def _block(kind: int, flags: int, body: bytes) -> bytes:
    """One RAR 4 header: CRC16 (low half of the CRC32 of type..end), type, flags, size, body."""
    head = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head


def rar_bytes(members: dict[str, bytes]) -> bytes:
    """A RAR 4 archive holding ``members`` (path with ``/`` -> content), stored uncompressed."""
    out = bytearray(RAR_MARK)
    out += _block(0x73, 0, b"\0" * 6)                       # archive header
    for path, data in members.items():
        name = path.replace("/", "\\").encode()
        body = struct.pack("<IIBIIBBHI", len(data), len(data), 2, zlib.crc32(data), _DOS_TIME, 20, 0x30,
                           len(name), 0x20) + name
        out += _block(0x74, 0x8000, body) + data            # file header (long block) + data
    out += _block(0x7B, 0x4000, b"")                        # end of archive
    return bytes(out)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path, data in members.items():
            z.writestr(path, data)
    return buf.getvalue()
