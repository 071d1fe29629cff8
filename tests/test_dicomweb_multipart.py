"""The streamed multipart/related reader and writer of DICOMweb, at every block size: a delimiter
split across reads, bodies that contain near-delimiters, preambles, limits and truncated bodies."""

from __future__ import annotations

import io
import os

import pytest

from dicomflow.dicomweb import multipart

BOUNDARY = "XyZ-boundary"
PAYLOADS = [b"", b"\r\n--XyZ-boundar", os.urandom(3000) + b"\r\n--XyZ-bound\r\n", b"last\r\n"]


def body(payloads, boundary=BOUNDARY, preamble=b"", padding=b"") -> bytes:
    out = preamble
    for i, data in enumerate(payloads):
        out += f"--{boundary}".encode() + padding + b"\r\n"
        out += (b"Content-Type: application/dicom\r\n" if i % 2 == 0 else b"") + b"X-Other: 1\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue".encode()


class Trickle(io.BytesIO):
    """A stream that never returns more than ``n`` bytes at a time (a slow client)."""

    def __init__(self, data: bytes, n: int):
        super().__init__(data)
        self.n = n

    def read(self, size=-1):
        return super().read(min(self.n, size if size >= 0 else self.n))


@pytest.mark.parametrize("block", [1, 2, 7, 13, 64, 4096, 1 << 20])
def test_parts_come_back_whole_whatever_the_block_size(tmp_path, block):
    data = body(PAYLOADS, preamble=b"ignore me\r\n", padding=b"  ")
    parts = multipart.read_parts(Trickle(data, block), BOUNDARY, tmp_path / str(block), max_bytes=len(data),
                                 max_parts=10, default_type="application/x-default", block=block)
    assert [p.path.read_bytes() for p in parts] == PAYLOADS
    assert [p.size for p in parts] == [len(p) for p in PAYLOADS]
    assert [p.content_type for p in parts] == ["application/dicom", "application/x-default"] * 2


def test_writer_and_reader_agree_and_the_length_is_exact(tmp_path):
    files = []
    for i, data in enumerate(PAYLOADS):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        files.append((path, "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"))
    boundary = multipart.new_boundary()
    written = b"".join(multipart.write_parts(files, boundary, block=5))
    assert len(written) == multipart.multipart_length([(len(d), ct) for (_, ct), d in zip(files, PAYLOADS)], boundary)
    parts = multipart.read_parts(io.BytesIO(written), boundary, tmp_path / "back", max_bytes=10**6, max_parts=10)
    assert [p.path.read_bytes() for p in parts] == PAYLOADS


def test_limits_and_broken_bodies(tmp_path):
    data = body(PAYLOADS)
    with pytest.raises(multipart.BodyTooLargeError):
        multipart.read_parts(io.BytesIO(data), BOUNDARY, tmp_path / "a", max_bytes=len(data) - 1, max_parts=10)
    with pytest.raises(multipart.BodyTooLargeError):
        multipart.read_parts(io.BytesIO(data), BOUNDARY, tmp_path / "b", max_bytes=len(data), max_parts=3)
    with pytest.raises(multipart.MultipartError, match="closing boundary"):
        multipart.read_parts(io.BytesIO(data[:-30]), BOUNDARY, tmp_path / "c", max_bytes=len(data), max_parts=10)
    with pytest.raises(multipart.MultipartError, match="boundary"):
        multipart.read_parts(io.BytesIO(data), "", tmp_path / "d", max_bytes=len(data), max_parts=10)
    with pytest.raises(multipart.MultipartError, match="no part"):
        multipart.read_parts(io.BytesIO(f"--{BOUNDARY}--\r\n".encode()), BOUNDARY, tmp_path / "e", max_bytes=100,
                             max_parts=10)
    endless_headers = f"--{BOUNDARY}\r\n".encode() + b"X: " + b"y" * 20000
    with pytest.raises(multipart.MultipartError, match="too long"):
        multipart.read_parts(io.BytesIO(endless_headers), BOUNDARY, tmp_path / "f", max_bytes=10**6, max_parts=10)


def test_media_type_parameters():
    assert multipart.parse_media_type('Multipart/Related; type="application/dicom"; boundary="a;b"') == (
        "multipart/related", {"type": "application/dicom", "boundary": "a;b"})
    assert multipart.parse_media_type("application/dicom") == ("application/dicom", {})
