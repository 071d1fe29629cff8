"""Safe extraction of downloaded ZIPs (results): all or nothing, never outside the target folder.

The rules are the product's own (:mod:`dicomflow.core.archive`: no absolute or drive-letter
names, no ``..``, no links or devices, size and ratio limits). Where the import skips an unsafe
member and goes on, the SDK refuses the whole download: a result with such a member is not one
to trust, and the caller must not be left with part of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dicomflow.core.archive import extract_archive
from dicomflow.errors import ArchiveError
from dicomflow.sdk.errors import UnsafeArchive


def extract_zip(archive: Path, folder: Path) -> list[Path]:
    """Extract ``archive`` into ``folder`` (created); the written paths, sorted. Raises
    :class:`UnsafeArchive` (and writes nothing) when any member is refused or the ZIP is corrupt."""
    folder = Path(folder).resolve()  # the extractor names absolute paths; "results" must work as well
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dicomflow-download-", dir=folder))
    try:
        try:
            result = extract_archive(archive, staging / "x", display_name="download")
        except ArchiveError as exc:
            raise UnsafeArchive(f"the downloaded archive cannot be extracted safely: {exc}") from None
        if result.refused:
            reasons = sorted({r.code.value for r in result.refused})
            raise UnsafeArchive(f"the downloaded archive holds {len(result.refused)} unsafe member(s) "
                                f"({', '.join(reasons)}); nothing was written")
        written = []
        for extracted in result.files:
            relative = Path(extracted.path).resolve().relative_to(staging / "x")
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(extracted.path, target)
            written.append(target)
        return sorted(written)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
