"""``multipart/related`` (RFC 2387) for DICOMweb, both ways, streamed.

- :func:`read_parts` reads a STOW-RS body from a file-like stream in blocks and writes each part to
  its own file: the body is never held in memory whole (one block plus one delimiter at most).
- :func:`write_parts` yields a WADO-RS body part by part, each file read from the store in blocks
  (no decoding: the stored bytes as they are).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import InputError, RequestTooLargeError

BLOCK = 256 * 1024
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(InputError):
    """The request body is not the multipart/related message its Content-Type announces."""


class BodyTooLargeError(RequestTooLargeError):
    """The request body is larger than this server accepts (see ``DICOMFLOW_UPLOAD_MAX_*``)."""


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"; boundary=x'`` → ``("multipart/related", {...})``.

    The media type and parameter names come back lower-cased; quoted values unquoted.
    """
    head, _, rest = (value or "").partition(";")
    params: dict[str, str] = {}
    for item in _split_params(rest):
        name, _, raw = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        params[name] = raw
    return head.strip().lower(), params


def _split_params(text: str) -> list[str]:
    """Split ``a=1; b="x;y"`` on semicolons outside quotes."""
    out, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [p for p in out if p.strip()]


@dataclass
class Part:
    """One part of a received message, written to ``path``."""

    index: int
    path: Path
    content_type: str
    size: int


def read_parts(stream, boundary: str, out_dir: Path, *, max_bytes: int, max_parts: int,
               default_type: str = "", block: int = BLOCK) -> list[Part]:
    """Read a multipart/related body from ``stream`` (``read(n)``) into one file per part in ``out_dir``.

    ``max_bytes`` bounds the whole body, ``max_parts`` the number of parts (``BodyTooLargeError``);
    a body that is cut short or has no closing delimiter is a ``MultipartError``.
    """
    if not boundary or len(boundary) > 70:
        raise MultipartError("the Content-Type needs a boundary parameter (1-70 characters)")
    out_dir.mkdir(parents=True, exist_ok=True)
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) + 4
    buf = bytearray(b"\r\n")  # the first delimiter has no CRLF before it: lend it one
    parts: list[Part] = []
    state = "preamble"
    total = 0
    current = None
    eof = False
    try:
        while True:
            if not eof:
                chunk = stream.read(block)
                if chunk:
                    total += len(chunk)
                    if total > max_bytes:
                        raise BodyTooLargeError(f"the request body exceeds {max_bytes} bytes, the most this server "
                                                "accepts in one request; send the instances in several requests")
                    buf += chunk
                else:
                    eof = True
            while True:
                if state == "headers":
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_HEADER_BYTES:
                            raise MultipartError(f"the headers of part {len(parts) + 1} are too long")
                        break
                    content_type = _content_type(bytes(buf[:end]), default_type)
                    del buf[:end + 4]
                    if len(parts) >= max_parts:
                        raise BodyTooLargeError(f"more than {max_parts} parts; this server accepts at most "
                                                f"{max_parts} instances per request")
                    path = out_dir / f"part-{len(parts) + 1:06d}"
                    current = open(path, "wb")  # noqa: SIM115  closed at the next delimiter or in finally
                    parts.append(Part(len(parts) + 1, path, content_type, 0))
                    state = "body"
                found = buf.find(delimiter)
                if found < 0:
                    if len(buf) > keep:
                        cut = len(buf) - keep
                        if state == "body":
                            current.write(buf[:cut])
                            parts[-1].size += cut
                        del buf[:cut]
                    break
                after = found + len(delimiter)
                line_end = buf.find(b"\r\n", after)
                closing = buf[after:after + 2] == b"--"
                if not closing and line_end < 0:
                    if eof:
                        raise MultipartError("the body ends inside a boundary line")
                    break  # wait for the rest of the boundary line
                if state == "body":
                    current.write(buf[:found])
                    parts[-1].size += found
                    current.close()
                    current = None
                if closing:
                    if not parts:
                        raise MultipartError("the message holds no part")
                    return parts
                del buf[:line_end + 2]
                state = "headers"
            if eof:
                raise MultipartError("the body ends before the closing boundary (the upload was cut short?)")
    finally:
        if current is not None:
            current.close()


def _content_type(raw: bytes, default: str) -> str:
    for line in raw.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return value.strip()
    return default


def new_boundary() -> str:
    return f"dicomflow-{uuid.uuid4().hex}"


def write_parts(files: Iterable[tuple[str | os.PathLike, str]], boundary: str, block: int = BLOCK) -> Iterator[bytes]:
    """Yield a multipart/related body of ``(path, content type)`` files, each read in ``block`` pieces."""
    for path, content_type in files:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            yield (f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n").encode("latin-1")
            while data := fh.read(block):
                yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def multipart_length(sizes: Iterable[tuple[int, str]], boundary: str) -> int:
    """The exact length of :func:`write_parts`' output for files of these ``(size, content type)``."""
    total = 0
    for size, content_type in sizes:
        total += len(f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n") + size + 2
    return total + len(f"--{boundary}--\r\n")
