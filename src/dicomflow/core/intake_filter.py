"""Intake filters: which incoming instances a source takes, and which series are kept out of processing.

A filter is attached to a source (a watched folder, the C-STORE receiver, a Query/Retrieve pull):

- **pull start** (date-time): instances of studies that took place before it are dropped;
- **study-date window** (from/to, inclusive): instances of studies outside it are dropped;
- **excluded series**: series whose Series Description matches one of ``exclude_descriptions`` or
  whose Image Type has a value matching one of ``exclude_image_types`` (shell patterns, case
  does not matter: ``*scout*``, ``LOCALIZER``) are either still catalogued but kept out of
  processing (``excluded_series = "catalogue"``, the default) or dropped (``"drop"``).

Instances without a Study Date pass the date rules (nothing to judge them by). Dropped instances are
counted as ignored with a reason naming the rule, never a value. The default filter
(:data:`DEFAULT_FILTER`) keeps localizers and scouts out of processing and drops nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import date, datetime

CATALOGUE = "catalogue"
DROP = "drop"
EXCLUDED_SERIES_ACTIONS = (CATALOGUE, DROP)

DEFAULT_EXCLUDE_DESCRIPTIONS = ("*localizer*", "*localiser*", "*scout*", "*topogram*", "*surview*", "*scanogram*")
DEFAULT_EXCLUDE_IMAGE_TYPES = ("LOCALIZER",)


def _patterns(values) -> tuple[str, ...]:
    if isinstance(values, str):
        values = values.replace(",", "\n").splitlines()
    return tuple(v.strip().lower() for v in values or () if v and v.strip())


def parse_dicom_date(text: str) -> date | None:
    text = (text or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def parse_dicom_datetime(day: str, time: str) -> datetime | None:
    """StudyDate + StudyTime (``HHMMSS.FFFFFF``, any prefix of it) as a naive date-time."""
    d = parse_dicom_date(day)
    if d is None:
        return None
    digits = (time or "").strip().split(".")[0].replace(":", "")
    try:
        hour = int(digits[0:2] or 0)
        minute = int(digits[2:4] or 0)
        second = min(int(digits[4:6] or 0), 59)
        return datetime(d.year, d.month, d.day, hour, minute, second)
    except ValueError:
        return datetime(d.year, d.month, d.day)


@dataclass(frozen=True)
class IntakeFilter:
    pull_start: datetime | None = None  # naive, in the time of the data (DICOM dates carry no zone)
    study_date_from: date | None = None
    study_date_to: date | None = None
    exclude_descriptions: tuple[str, ...] = field(default=DEFAULT_EXCLUDE_DESCRIPTIONS)
    exclude_image_types: tuple[str, ...] = field(default=DEFAULT_EXCLUDE_IMAGE_TYPES)
    excluded_series: str = CATALOGUE
    name: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_descriptions", _patterns(self.exclude_descriptions))
        object.__setattr__(self, "exclude_image_types", _patterns(self.exclude_image_types))
        if self.pull_start is not None and self.pull_start.tzinfo is not None:
            object.__setattr__(self, "pull_start", self.pull_start.replace(tzinfo=None))
        if self.excluded_series not in EXCLUDED_SERIES_ACTIONS:
            raise ValueError(f"excluded_series must be one of {', '.join(EXCLUDED_SERIES_ACTIONS)}")

    # --- study rules: drop -------------------------------------------------------------------------
    def drop_reason(self, study_date: str, study_time: str = "") -> str | None:
        """Why an instance of a study on ``study_date`` (DICOM ``YYYYMMDD``) is dropped, or None."""
        day = parse_dicom_date(study_date)
        if day is None:
            return None
        if self.study_date_from and day < self.study_date_from:
            return f"study date before the intake filter's window ({self.name})"
        if self.study_date_to and day > self.study_date_to:
            return f"study date after the intake filter's window ({self.name})"
        if self.pull_start is not None:
            when = parse_dicom_datetime(study_date, study_time)
            if when is not None and when < self.pull_start:
                return f"study before the intake filter's pull start ({self.name})"
        return None

    # --- series rules: keep out of processing, or drop ---------------------------------------------
    @property
    def needs_image_type(self) -> bool:
        return bool(self.exclude_image_types)

    def series_exclusion(self, description: str, image_type: list[str] | tuple[str, ...] | None = None) -> str | None:
        """Why a series is excluded (its description or image type matched), or None."""
        text = (description or "").strip().lower()
        if text and any(fnmatch.fnmatchcase(text, p) for p in self.exclude_descriptions):
            return "series description matches an excluded pattern (localizer/scout)"
        values = [str(v).strip().lower() for v in image_type or ()]
        if any(fnmatch.fnmatchcase(v, p) for v in values for p in self.exclude_image_types):
            return "image type matches an excluded pattern (localizer/scout)"
        return None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "pull_start": self.pull_start.isoformat() if self.pull_start else None,
            "study_date_from": self.study_date_from.isoformat() if self.study_date_from else None,
            "study_date_to": self.study_date_to.isoformat() if self.study_date_to else None,
            "exclude_descriptions": list(self.exclude_descriptions),
            "exclude_image_types": list(self.exclude_image_types),
            "excluded_series": self.excluded_series,
        }


DEFAULT_FILTER = IntakeFilter()
NO_FILTER = IntakeFilter(exclude_descriptions=(), exclude_image_types=(), name="none")
