"""Uploaded videos: streamed to a temporary folder with a size limit, deleted when done.

The multipart body is parsed as it arrives (python-multipart's streaming parser, as Starlette
uses it), so a video never sits in memory whole, and the upload stops at the limit: a
``Content-Length`` over it is refused before a byte is read, and a body that grows past it
(no length given, or a wrong one) is cut off there. The file keeps only the suffix of the name
the client gave (``.avi``, ``.mp4``: decoders look at it), never the name itself.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harx.features.errors import HarxError


#: form fields a request may have (the page sends two: the video and the run)
MAX_PARTS = 8


class UploadError(HarxError):
    """A request that is not a valid upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """The parts of one multipart request: the file field's temporary path and the text fields."""

    folder: Path
    file: Path | None = None
    filename: str = ""
    fields: dict = field(default_factory=dict)
    size: int = 0

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


async def receive_upload(request, file_field: str, max_bytes: int, tmp_root: Path | None = None) -> Upload:
    """Stream ``request``'s multipart body: field ``file_field`` into a temporary file, the other
    fields into ``fields`` (at most 4 KiB each). The caller calls ``discard()``; on an error
    (UploadError, or the client going away) the folder is deleted here.

    Raises:
        UploadError: not multipart (415), no file in ``file_field`` (400), over ``max_bytes`` (413).
    """
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(f"send the video as multipart/form-data in field {file_field!r}", 415)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + 64 * 1024:
        raise UploadError(f"the upload is {int(length) / 2**20:.1f} MiB; this server takes at most "
                          f"{max_bytes / 2**20:.0f} MiB (harx serve --max-upload-mb)", 413)
    upload = Upload(Path(tempfile.mkdtemp(prefix="harx-upload-", dir=tmp_root)))
    state = {"name": None, "filename": None, "out": None, "text": bytearray(), "header": b"", "headers": {},
             "parts": 0}

    def on_part_begin():
        state.update(name=None, filename=None, out=None, text=bytearray(), headers={})
        state["parts"] += 1
        if state["parts"] > MAX_PARTS:
            raise UploadError(f"the form has more than {MAX_PARTS} fields", 400)

    def on_header_field(data, start, end):
        state["header"] = data[start:end].lower()

    def on_header_value(data, start, end):
        state["headers"][state["header"]] = state["headers"].get(state["header"], b"") + data[start:end]

    def on_headers_finished():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field and b"filename" in disposition:
            upload.filename = disposition[b"filename"].decode("utf-8", "replace")
            suffix = Path(upload.filename).suffix.lower()
            suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".video"
            upload.file = upload.folder / f"upload{suffix}"
            state["out"] = open(upload.file, "wb")

    def on_part_data(data, start, end):
        if state["out"] is not None:
            upload.size += end - start
            if upload.size > max_bytes:
                raise UploadError(f"the upload is larger than {max_bytes / 2**20:.0f} MiB, the most this server takes "
                                  "(harx serve --max-upload-mb)", 413)
            state["out"].write(data[start:end])
        else:
            state["text"] += data[start:end]
            if len(state["text"]) > 4096:
                raise UploadError(f"form field {state['name']!r} is too long", 400)

    def on_part_end():
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
        elif state["name"]:
            upload.fields[state["name"]] = state["text"].decode("utf-8", "replace")

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)        # the whole body counts, text fields and headers too
            if received > max_bytes + 64 * 1024:
                raise UploadError(f"the upload is larger than {max_bytes / 2**20:.0f} MiB, the most this server "
                                  "takes (harx serve --max-upload-mb)", 413)
            parser.write(chunk)
        parser.finalize()
        if parser.state not in (MultipartState.END, MultipartState.END_BOUNDARY):
            raise UploadError("the upload ended before its last part did (cut off?)", 400)
    except BaseException as err:       # the limit, a malformed body, or the client gone: nothing kept
        upload.discard()
        if isinstance(err, UploadError):
            raise
        if isinstance(err, Exception) and not _is_disconnect(err):
            raise UploadError(f"the upload could not be read ({type(err).__name__}: {err})", 400) from None
        raise
    finally:
        if state["out"] is not None:      # a part the body never finished
            state["out"].close()
    if upload.file is None or upload.size == 0:
        upload.discard()
        raise UploadError(f"no video in the request: send the file in multipart field {file_field!r}", 400)
    return upload


def _is_disconnect(err: BaseException) -> bool:
    from starlette.requests import ClientDisconnect

    return isinstance(err, ClientDisconnect)
