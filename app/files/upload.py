"""Receive a multipart upload straight from the socket into the upload folder, hashing and counting as it goes.

Starlette's form parser would first spool the whole body to a temporary file, so a 50 GB upload would be
accepted to disk before any limit applied. Here the body is fed chunk by chunk to python-multipart: the
file part is written to `dest` and hashed (sha256) as it arrives, and the moment it passes `max_bytes`
the request stops with 413 and the partial file is deleted.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import AppError, InvalidRequest, PayloadTooLarge
from app.settings import Settings
from distill.data.arrays import ArrayLimits

if TYPE_CHECKING:  # a TypedDict that python-multipart only defines for type checkers
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024  # a text field (purpose) is a few bytes; anything larger is not a form we know
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the text fields around the file


def has_control_chars(text: str) -> bool:
    """C0 control characters and DEL: never part of a name, an id or a cursor."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def dataset_limits(settings: Settings) -> ArrayLimits:
    """What a dataset's .npy headers may declare (checked before numpy reads a byte of data)."""
    return ArrayLimits(
        max_bytes=settings.max_dataset_bytes,
        max_members=settings.max_dataset_members,
        max_dims=settings.max_dataset_dims,
    )


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


@dataclass
class ReceivedUpload:
    """The text fields of the form and the file part, already on disk at `path` (None if none was sent)."""

    fields: dict[str, str]
    filename: str | None
    path: Path | None
    bytes: int
    sha256: str

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


class _Receiver:
    """python-multipart callbacks: file data goes to disk (synchronously: local writes of one network chunk)."""

    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.part = _Part()
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.file: IO[bytes] | None = None
        self.path: Path | None = None
        self.filename: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self.writing = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": lambda data, start, end: self.header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidRequest("a multipart part has no name in its Content-Disposition", code="invalid_multipart")
        self.part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self.part.filename = options[b"filename"].decode("utf-8", "replace")
            if has_control_chars(self.part.filename):
                # A label that would reach the database (Postgres refuses NUL in text) and every listing.
                raise InvalidRequest(
                    "the file name contains control characters (NUL, newline, ...); rename the file",
                    code="invalid_filename",
                    param=FILE_FIELD,
                )
        self.writing = self.part.name == FILE_FIELD and self.part.filename is not None
        if self.writing:
            if self.file is not None or self.path is not None:
                raise InvalidRequest("send exactly one file per upload", code="invalid_multipart", param=FILE_FIELD)
            self.path = self.dest / f".partial-{uuid.uuid4().hex}"
            self.file = self.path.open("wb")
            self.filename = self.part.filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.writing:
            assert self.file is not None
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(
                    f"the file is larger than the limit of {self.max_bytes:,} bytes", param=FILE_FIELD
                )
            self.digest.update(chunk)
            self.file.write(chunk)
        elif self.part.filename is None:
            if len(self.part.data) + len(chunk) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"form field {self.part.name!r} is too long", param=self.part.name)
            self.part.data.extend(chunk)
        # A file under another field name is not something we asked for: its bytes are dropped.

    def on_part_end(self) -> None:
        if self.writing:
            assert self.file is not None
            self.file.close()
            self.writing = False
        elif self.part.filename is None:
            self.fields[self.part.name] = self.part.data.decode("utf-8", "replace")

    def abort(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(request: Request, *, dest: Path, max_bytes: int) -> ReceivedUpload:
    """Stream a multipart/form-data body into `dest`; raise 413 past `max_bytes`, 415/422 for a bad body."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UnsupportedMediaType("send multipart/form-data with the fields 'file' and 'purpose'")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        # Refuse before reading a byte: the client said how much it is about to send.
        raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes:,} bytes", param=FILE_FIELD)

    dest.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(dest, max_bytes)
    parser = MultipartParser(options[b"boundary"], receiver.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        receiver.abort()
        raise InvalidRequest(f"the multipart body is malformed: {exc}", code="invalid_multipart") from None
    except BaseException:  # 413, a client that hung up, a full disk, a cancelled request: no partial file
        receiver.abort()
        raise
    if receiver.writing:  # the body ended in the middle of the file part
        receiver.abort()
        raise InvalidRequest("the multipart body ended before the file did", code="invalid_multipart")
    return ReceivedUpload(
        fields=receiver.fields,
        filename=receiver.filename,
        path=receiver.path,
        bytes=receiver.size,
        sha256=receiver.digest.hexdigest(),
    )
