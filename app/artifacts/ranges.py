"""Range headers of downloads, checked before the file is opened, so every refusal is the error envelope.

Starlette's FileResponse serves a valid Range (206, or multipart/byteranges) but answers a bad one itself in
text/plain; this check runs first with the same reading of the header (RFC 9110 §14.1.2), so what reaches
FileResponse is a header it serves.
"""

from __future__ import annotations

import re

from app.errors import AppError

_RANGE = re.compile(r"^(\d*)-(\d*)$")
_MAX_DIGITS = 19  # a byte position past 2^63 is no position in any file


class RangeNotSatisfiable(AppError):
    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int, code: str | None = None) -> None:
        super().__init__(message, code=code, param="Range")
        self.headers = {"Content-Range": f"bytes */{size}"}


def check_range(header: str | None, *, size: int, max_ranges: int) -> None:
    """Raise RangeNotSatisfiable unless `header` is absent or asks for 1..max_ranges satisfiable byte ranges."""
    if header is None:
        return
    units, sep, spec = header.partition("=")
    if not sep or units.strip().lower() != "bytes":
        raise RangeNotSatisfiable(
            f"Range must be 'bytes=START-END', got {header[:60]!r}", size=size, code="invalid_range"
        )
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) > max_ranges:
        raise RangeNotSatisfiable(
            f"at most {max_ranges} byte ranges per request, got {len(parts)}", size=size, code="too_many_ranges"
        )
    for part in parts:
        match = _RANGE.match(part)
        if match is None or part == "-" or any(len(g) > _MAX_DIGITS for g in match.groups()):
            raise RangeNotSatisfiable(
                f"Range part {part[:60]!r} is not START-END, START- or -SUFFIX in bytes",
                size=size,
                code="invalid_range",
            )
        start, end = match.groups()
        if not start:  # -SUFFIX: the last SUFFIX bytes; -0 asks for nothing
            if int(end) == 0 or size == 0:
                raise RangeNotSatisfiable(f"Range {part!r} selects no bytes of {size}", size=size)
            continue
        if int(start) >= size:
            raise RangeNotSatisfiable(f"Range {part!r} starts past the end of the {size}-byte file", size=size)
        if end and int(end) < int(start):
            raise RangeNotSatisfiable(f"Range {part!r} ends before it starts", size=size, code="invalid_range")
