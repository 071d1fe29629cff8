"""What an extraction reports, and the rules a member name must pass before anything is written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class RefusalCode(str, Enum):
    """Why one member was not extracted (the rest of its archive still was)."""

    PATH_TRAVERSAL = "path_traversal"
    ABSOLUTE_PATH = "absolute_path"
    DRIVE_LETTER = "drive_letter"
    BAD_NAME = "bad_name"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    SPECIAL_FILE = "special_file"
    ENCRYPTED = "encrypted"
    DUPLICATE = "duplicate"
    PATH_CONFLICT = "path_conflict"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    NESTED_ARCHIVE = "nested_archive"


@dataclass(frozen=True)
class ExtractedFile:
    """A regular file now on disk inside the destination folder."""

    path: Path
    member_name: str  # "archive.zip!inner/path" (nested: "outer.zip!inner.zip!file.dcm")
    size: int


@dataclass(frozen=True)
class RefusedMember:
    member_name: str
    reason: str
    code: RefusalCode


@dataclass
class ExtractionResult:
    files: list[ExtractedFile] = field(default_factory=list)
    refused: list[RefusedMember] = field(default_factory=list)
    bytes_written: int = 0  # total size of ``files`` (nested archive files are removed once opened)


class Refusal(Exception):
    """Internal: one member is refused; carries the code and a reason a user can act on."""

    def __init__(self, code: RefusalCode, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_NAME_BYTES = 1024  # DICOM exports use a few hundred at most; keeps full paths well under PATH_MAX
MAX_NAME_DEPTH = 64  # folders per member name (each one is an inode and a few system calls)


def member_parts(name: str) -> tuple[str, ...]:
    """The path components a member name may be written to, or raise :class:`Refusal`.

    Backslashes count as separators (old Windows tools write them; on Linux they would otherwise
    become part of a file name and hide ``..\\`` traversal). ``.`` and empty components are
    dropped; any ``..`` is refused even where it would stay inside (no legitimate archive needs it).
    """
    if "\x00" in name:
        raise Refusal(RefusalCode.BAD_NAME, "member name contains a NUL character")
    normal = name.replace("\\", "/")
    if _DRIVE.match(normal):
        raise Refusal(RefusalCode.DRIVE_LETTER, "member name starts with a drive letter (absolute Windows path)")
    if normal.startswith("/"):
        raise Refusal(RefusalCode.ABSOLUTE_PATH, "member name is an absolute path")
    parts = tuple(p for p in normal.split("/") if p not in ("", "."))
    if ".." in parts:
        raise Refusal(RefusalCode.PATH_TRAVERSAL, "member name contains '..' (path traversal)")
    if not parts:
        raise Refusal(RefusalCode.BAD_NAME, "member name is empty")
    if len(normal.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES or len(parts) > MAX_NAME_DEPTH:
        raise Refusal(
            RefusalCode.BAD_NAME,
            f"member name is too long or too deep (over {MAX_NAME_BYTES} bytes or {MAX_NAME_DEPTH} folders)",
        )
    return parts
