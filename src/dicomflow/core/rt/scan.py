"""Read the headers of every DICOM file below a path, fast: headers only, in parallel when large.

Files that are not DICOM (or DICOM without series/instance identity, e.g. DICOMDIR) are skipped
and counted, never fatal: a folder from a clinic always has some. Each header is handed to an
``extract`` function in the worker, so only small records cross process boundaries and no
dataset is held longer than needed.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

#: Below this many files a process pool costs more than it saves.
PARALLEL_THRESHOLD = 300


def iter_files(path: str | os.PathLike) -> Iterator[str]:
    """Every regular file at or below ``path`` (sorted, symlinked folders not followed)."""
    root = Path(path)
    if root.is_file():
        yield str(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                yield full


def read_header(path: str) -> Any | None:
    """The header of a DICOM file (no pixel data), or None if it is not a usable DICOM instance.

    Part 10 files are read normally; files without preamble are accepted only when they start like
    a bare dataset (group 0008), so random binaries are not parsed as DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            with open(path, "rb") as handle:
                head = handle.read(4)
            if head[:2] != b"\x08\x00":
                return None
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if not getattr(ds, "SOPInstanceUID", None) or not getattr(ds, "SeriesInstanceUID", None):
            return None
        return ds
    except Exception:  # truncated/corrupt files are skipped like non-DICOM ones
        return None


def _read_and_extract(job: tuple[str, Callable[[Any, str], T]]) -> tuple[str, T | None]:
    path, extract = job
    ds = read_header(path)
    if ds is None:
        return path, None
    try:
        return path, extract(ds, path)
    except Exception:
        return path, None


@dataclass
class ScanResult:
    records: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # paths that were not usable DICOM


def scan(
    path: str | os.PathLike, extract: Callable[[Any, str], T], workers: int | None = None
) -> ScanResult:
    """Apply ``extract(dataset, path)`` to every DICOM header below ``path``.

    ``extract`` must be a module-level function (it is sent to worker processes). Returns the
    non-None records in path order and the skipped paths.
    """
    paths = list(iter_files(path))
    jobs = [(p, extract) for p in paths]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(paths) >= PARALLEL_THRESHOLD else 1
    if multiprocessing.current_process().daemon:
        workers = 1  # e.g. inside a Celery prefork worker: daemonic processes may not have children
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_read_and_extract, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    else:
        results = [_read_and_extract(job) for job in jobs]
    out = ScanResult()
    for p, record in results:
        if record is None:
            out.skipped.append(p)
        else:
            out.records.append(record)
    return out
