"""The file part of a ``multipart/form-data`` upload, cut out of the spooled body.

``POST /api/models`` streams its body to disk (under ``api.max_upload_mb``) before
anything reads it; a form upload (``curl -F file=@bundle.zip``) is that same body
with a multipart envelope. This cuts the first part that carries a file (a
``filename=`` parameter, or else the first part) out of the file on disk through
``mmap``, so a bundle of hundreds of MiB is never held in memory, and needs no
form-parsing dependency.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


class FormError(ValueError):
    """A multipart body that cannot be read; the message says why."""


def is_form(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header names a multipart form upload."""
    return (content_type or "").split(";")[0].strip().lower() == "multipart/form-data"


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` content type."""
    m = _BOUNDARY.search(content_type)
    if not m:
        raise FormError("multipart/form-data without a boundary parameter")
    try:
        return (m.group(1) or m.group(2)).encode("latin-1")
    except UnicodeEncodeError as e:
        raise FormError("a multipart boundary that is not latin-1") from e


def extract_file_part(body: Path, content_type: str, dest: Path) -> str | None:
    """Copy the file part of the multipart body in ``body`` to ``dest``.

    Returns:
        The part's ``filename`` parameter, or None when it had none.

    Raises:
        FormError: no boundary, no part, or a part without its end delimiter.
    """
    delim = b"--" + boundary_of(content_type)
    with body.open("rb") as f:
        if body.stat().st_size == 0:
            raise FormError("empty multipart body")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = mm.find(delim)
            chosen: tuple[int, int, str | None] | None = None
            while pos >= 0:
                head_start = pos + len(delim)
                if mm[head_start : head_start + 2] == b"--":  # the closing delimiter
                    break
                head_end = mm.find(b"\r\n\r\n", head_start)
                if head_end < 0:
                    raise FormError("a multipart part without the blank line after its headers")
                headers = mm[head_start:head_end].decode("latin-1")
                start = head_end + 4
                end = mm.find(b"\r\n" + delim, start)
                if end < 0:
                    raise FormError("a multipart part without its closing boundary")
                fname = re.search(r'filename="([^"]*)"', headers, re.IGNORECASE)
                if fname is not None:
                    chosen = (start, end, fname.group(1))
                    break
                if chosen is None:
                    chosen = (start, end, None)
                pos = end + 2
            if chosen is None:
                raise FormError("a multipart body with no part: send the archive as a file field")
            start, end, name = chosen
            with dest.open("xb") as out:
                step = 1 << 20
                for off in range(start, end, step):
                    out.write(mm[off : min(off + step, end)])
    return name
