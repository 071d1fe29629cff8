"""Dry run: evaluate rules on every series found in a folder, writing nothing anywhere.

Each file's header is read without pixels, and only a few tags of it (series UID, instance number);
then one representative header per series (lowest Instance Number, then path) is read in full.
Files that are not DICOM, and archives (a dry run unpacks nothing), are skipped and reported by
path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from dicomflow.core.archive import is_archive
from dicomflow.core.rules.evaluate import SeriesContext, SeriesEvaluation, evaluate_series
from dicomflow.core.rules.model import Ruleset, Template
from dicomflow.errors import InputError

_SCAN_TAGS = ["SeriesInstanceUID", "InstanceNumber"]


@dataclass
class FoundSeries:
    series_uid: str
    paths: list[Path] = field(default_factory=list)
    representative: Path | None = None


@dataclass
class DryRunReport:
    evaluations: list[SeriesEvaluation]
    skipped: list[tuple[Path, str]]


def _files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


def find_series(root: str | Path) -> tuple[list[FoundSeries], list[tuple[Path, str]]]:
    """Group the DICOM files under ``root`` by Series Instance UID (headers only)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root} does not exist")
    series: dict[str, FoundSeries] = {}
    best: dict[str, tuple[int, str]] = {}
    skipped: list[tuple[Path, str]] = []
    for path in _files(root):
        if is_archive(path):
            skipped.append((path, "archive: the dry run reads folders only (unpack it first)"))
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_SCAN_TAGS)
        except (InvalidDicomError, EOFError):
            skipped.append((path, "not a DICOM file"))
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            skipped.append((path, f"unreadable DICOM header ({type(exc).__name__})"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            skipped.append((path, "no SeriesInstanceUID"))
            continue
        found = series.setdefault(uid, FoundSeries(uid))
        found.paths.append(path)
        try:
            number = int(ds.get("InstanceNumber"))
        except (TypeError, ValueError):
            number = 2**31
        key = (number, str(path))
        if uid not in best or key < best[uid]:
            best[uid] = key
            found.representative = path
    return list(series.values()), skipped


def series_context(found: FoundSeries) -> SeriesContext:
    """The representative header (full, without pixels) and the instance count of a series."""
    assert found.representative is not None
    dataset = pydicom.dcmread(found.representative, stop_before_pixels=True)
    return SeriesContext(dataset, instance_count=len(found.paths))


def dry_run(
    root: str | Path, rulesets: list[Ruleset], templates: Mapping[str, Template] | None
) -> DryRunReport:
    """Evaluate ``rulesets`` on every series under ``root``; no side effects."""
    found, skipped = find_series(root)
    evaluations = []
    for item in sorted(found, key=lambda s: s.series_uid):
        try:
            context = series_context(item)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            skipped.append((item.representative, f"unreadable DICOM header ({type(exc).__name__})"))
            continue
        evaluations.append(evaluate_series(context, rulesets, templates))
    return DryRunReport(evaluations, skipped)
