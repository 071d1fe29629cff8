"""Recognise archives by their first bytes, never by their name.

A DICOM Part 10 file may carry anything in its 128-byte preamble – even a ZIP signature (a known
polyglot trick) – so a file with ``DICM`` at offset 128 is always DICOM, never an archive.
Compressed streams (gzip, bzip2, xz) count as archives only if what they hold is a TAR: a
gzipped single file is not an archive. Old pre-POSIX (v7) TARs carry no magic and are not
recognised.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
from enum import Enum


class ArchiveKind(str, Enum):
    ZIP = "zip"
    TAR = "tar"
    TAR_GZ = "tar.gz"
    TAR_BZ2 = "tar.bz2"
    TAR_XZ = "tar.xz"


_HEAD = 512
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # member, empty archive, spanned
_COMPRESSED = {
    b"\x1f\x8b": (ArchiveKind.TAR_GZ, gzip.open),
    b"BZh": (ArchiveKind.TAR_BZ2, bz2.open),
    b"\xfd7zXZ\x00": (ArchiveKind.TAR_XZ, lzma.open),
}
OPENERS = {kind: opener for kind, opener in _COMPRESSED.values()}


def _is_tar_header(block: bytes) -> bool:
    return len(block) >= 262 and block[257:262] == b"ustar"


def archive_kind(path: str | os.PathLike) -> ArchiveKind | None:
    """The archive format of ``path`` from its magic bytes, or None for anything else.

    Only regular files can be archives (a FIFO is never opened: reading it would block).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return None
    if head[:4] in _ZIP_MAGICS:
        return ArchiveKind.ZIP
    if _is_tar_header(head):
        return ArchiveKind.TAR
    for magic, (kind, opener) in _COMPRESSED.items():
        if head.startswith(magic):
            try:
                with opener(path, "rb") as stream:
                    inner = stream.read(_HEAD)
            except (OSError, EOFError, lzma.LZMAError):
                return None  # a damaged compressed file: not something we can unpack
            return kind if _is_tar_header(inner) else None
    return None


def is_archive(path: str | os.PathLike) -> bool:
    """True if ``path`` is a ZIP or a (possibly gzip/bzip2/xz-compressed) TAR, by magic bytes."""
    return archive_kind(path) is not None
