"""How far an archive may expand, and the running tally that enforces it while bytes stream.

Why these defaults (all configurable; ``dicomflow.settings`` reads them from the environment with
:meth:`ArchiveLimits.from_env` into ``ARCHIVE_LIMITS``):

- ``max_total_size`` 20 GiB: a large RT study (4D CT, several thousand slices, dose grids) is a few
  GiB; 20 GiB leaves room for multi-patient research exports while keeping one upload from filling
  a typical data disk.
- ``max_member_size`` 4 GiB: DICOM element lengths are 32-bit, so no single DICOM file we can use
  is larger; anything bigger is not a DICOM instance.
- ``max_ratio`` 200:1 (per member and overall): real CT/MR compress about 2–4:1 with Deflate,
  RTSTRUCT/RTPLAN text 3–10:1; zero-padded images, blank RT images and dose grids that are mostly
  zero reach tens to a few hundred. Deflate itself cannot exceed ~1032:1, so anything near that is
  an all-zero payload – the shape of a bomb – while 200:1 still lets honest data through.
- ``ratio_grace_size`` 64 MiB: ratios are enforced only once the output (of one member, or of the
  whole extraction) is larger than this. Small outputs cannot hurt however compressible they are,
  and a single zero-filled image must not fail an upload; what we prevent is a small upload
  expanding to fill the disk.
- ``max_members`` 100,000: several large studies in one upload; a bomb made of millions of tiny
  members (inode exhaustion, catalogue flooding) is refused.
- ``max_depth`` 3: exports sometimes zip a folder of ZIPs (and users zip that again); deeper
  nesting is how recursive bombs such as 42.zip multiply.

Nested archives share one budget: bytes written and members counted by an inner archive count
against the outermost extraction, and the overall ratio is taken against the outermost file's size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from dicomflow.errors import ArchiveBombError, ArchiveError, ConfigurationError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_ENV_PREFIX = "DICOMFLOW_ARCHIVE_"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits for one extraction (including the archives nested inside it)."""

    max_total_size: int = 20 * GiB
    max_member_size: int = 4 * GiB
    max_ratio: float = 200.0
    ratio_grace_size: int = 64 * MiB
    max_members: int = 100_000
    max_depth: int = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (value == 0 and f.name not in ("max_depth", "ratio_grace_size")):
                raise ConfigurationError(f"archive limit {f.name} must be positive (got {value})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ArchiveLimits:
        """Defaults overridden by ``DICOMFLOW_ARCHIVE_<FIELD>`` variables, parsed strictly.

        Sizes accept a unit (``20G``, ``512MiB``); e.g. ``DICOMFLOW_ARCHIVE_MAX_TOTAL_SIZE=50G``,
        ``DICOMFLOW_ARCHIVE_MAX_RATIO=500``, ``DICOMFLOW_ARCHIVE_MAX_DEPTH=2``. A value that does not
        parse, or is out of range, is one ConfigurationError naming the variable and what it accepts.
        ``dicomflow.settings`` calls this once (``ARCHIVE_LIMITS``); core code is handed the result.
        """
        values: dict[str, float | int] = {}
        for f in fields(cls):
            name = _ENV_PREFIX + f.name.upper()
            raw = (environ.get(name) or "").strip()
            if not raw:
                continue
            number = _parse_limit(f.name, raw)
            if number is None:
                raise ConfigurationError(f"{name}={raw!r} is not valid: expected {_accepted(f.name)}")
            values[f.name] = number
        return cls(**values)


def _zero_allowed(field_name: str) -> bool:
    return field_name in ("max_depth", "ratio_grace_size")


def _accepted(field_name: str) -> str:
    if field_name.endswith("_size"):
        kind = "a size in bytes with an optional unit K, M, G or T (e.g. 20G)"
    elif field_name == "max_ratio":
        kind = "a number"
    else:
        kind = "a whole number"
    return kind + (", 0 or more" if _zero_allowed(field_name) else ", greater than 0")


def _parse_limit(field_name: str, raw: str) -> float | int | None:
    """The limit ``raw`` gives for ``field_name``, or None when it is not an accepted value."""
    match = _SIZE.match(raw)
    if not match:
        return None
    digits, unit = match.group(1), match.group(2).upper()
    if not field_name.endswith("_size") and digits != raw:
        return None  # units (and a stray "B") only for sizes
    if field_name in ("max_members", "max_depth") and not digits.isdigit():
        return None
    number = float(digits) * _UNITS[unit]
    if number < 0 or (number == 0 and not _zero_allowed(field_name)):
        return None
    return number if field_name == "max_ratio" else int(number)


def archive_error(cls: type[ArchiveError], archive: str, reason: str) -> ArchiveError:
    """An error naming the archive by its display path, with the bare ``reason`` kept apart."""
    exc = cls(f"{archive}: {reason}")
    exc.reason = reason  # type: ignore[attr-defined]
    return exc


def error_reason(exc: BaseException) -> str:
    """The reason of an archive error without the archive's name (for per-file reports)."""
    return getattr(exc, "reason", None) or str(exc)


class Budget:
    """The running tally of one extraction tree: bytes really written and members seen.

    Declared sizes are checked up front where a format has them, but only these counters – fed with
    the bytes actually written – are trusted.
    """

    def __init__(self, limits: ArchiveLimits, top_name: str, top_size: int):
        self.limits = limits
        self.top_name = top_name
        self.top_size = max(top_size, 1)
        self.written = 0
        self.members = 0

    def count_member(self, archive: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise archive_error(
                ArchiveBombError, archive, f"more than {self.limits.max_members} members (limit max_members)"
            )

    def check_declared_members(self, archive: str, count: int) -> None:
        if self.members + count > self.limits.max_members:
            raise archive_error(
                ArchiveBombError,
                archive,
                f"declares {count} members, more than the limit of {self.limits.max_members} (max_members)",
            )

    def check_declared_total(self, archive: str, declared: int) -> None:
        if self.written + declared > self.limits.max_total_size:
            raise archive_error(
                ArchiveBombError,
                archive,
                f"declares {declared} bytes uncompressed, over the total-size limit of "
                f"{self.limits.max_total_size} bytes (max_total_size)",
            )

    def too_compressed(self, produced: int, compressed: int) -> bool:
        limits = self.limits
        return produced > limits.ratio_grace_size and produced > limits.max_ratio * max(compressed, 1)

    def charge(self, archive: str, n: int) -> None:
        """Account for ``n`` bytes about to be written; raises before the limit is crossed."""
        self.written += n
        if self.written > self.limits.max_total_size:
            raise archive_error(
                ArchiveBombError,
                archive,
                f"expands beyond the total-size limit of {self.limits.max_total_size} bytes (max_total_size)",
            )
        if self.too_compressed(self.written, self.top_size):
            raise archive_error(
                ArchiveBombError,
                archive,
                f"expands more than {self.limits.max_ratio:g} times the size of {self.top_name} "
                "(compression-ratio limit max_ratio)",
            )
