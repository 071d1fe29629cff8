"""Intake filters at work: which filter a source uses, and how an import session applies it.

The rules themselves are pure (:mod:`dicomflow.core.intake_filter`); the named filters an
administrator configures are :class:`dicomflow.intake.models.IntakeFilter` rows. Sources:

- a watched folder: its ``intake_filter`` (default: :data:`~dicomflow.core.intake_filter.DEFAULT_FILTER`);
- the C-STORE receiver: the filter named by ``DICOMFLOW_SCP_INTAKE_FILTER`` (default: the default);
- a Query/Retrieve pull (C-GET): the filter named for the pull, else the node's, else the default.
"""

from __future__ import annotations

import logging

from dicomflow.core.intake_filter import DEFAULT_FILTER, DROP, IntakeFilter
from dicomflow.core.ingest import StoredFile
from dicomflow.errors import InputError

log = logging.getLogger(__name__)


def named_filter(name: str | None) -> IntakeFilter:
    """The configured filter ``name`` as a core filter; the default for ''/None; InputError if unknown."""
    if not name:
        return DEFAULT_FILTER
    from dicomflow.intake.models import IntakeFilter as FilterRow

    row = FilterRow.objects.filter(name=name).first()
    if row is None:
        raise InputError(f"no intake filter named '{name}' is configured (admin: Intake → Intake filters)")
    return row.core()


def folder_filter(folder) -> IntakeFilter:
    return folder.intake_filter.core() if getattr(folder, "intake_filter", None) is not None else DEFAULT_FILTER


def receiver_filter() -> IntakeFilter:
    """The receiver's filter (``DICOMFLOW_SCP_INTAKE_FILTER``); the default if the name is unknown (logged)."""
    from django.conf import settings

    name = getattr(settings, "DICOMFLOW_SCP_INTAKE_FILTER", "")
    try:
        return named_filter(name)
    except InputError:
        log.error("receiver: intake filter '%s' is not configured; using the default filter", name)
        return DEFAULT_FILTER


def _image_type(path) -> list[str]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImageType"], force=True)
    except Exception:
        return []
    value = ds.get("ImageType")
    if value is None:
        return []
    return [str(v) for v in value] if not isinstance(value, str) else value.split("\\")


def _discard(session, item: StoredFile, reason: str) -> None:
    """Count the file as ignored; remove it from the store if this import put it there."""
    session.ignore(item.display_name, reason)
    if item.stored.created:
        try:
            session.store.path_of(item.stored.relpath).unlink()
        except OSError:
            pass


def series_verdict(session, item: StoredFile) -> str | None:
    """Why the item's series is excluded (decided once per series per session), or None."""
    flt: IntakeFilter = session.intake_filter
    uid = item.header.series_instance_uid
    if uid not in session._series_verdicts:
        image_type = _image_type(session.store.path_of(item.stored.relpath)) if flt.needs_image_type else []
        session._series_verdicts[uid] = flt.series_exclusion(item.header.series_description, image_type)
    return session._series_verdicts[uid]


def apply_filter(session, batch: list[StoredFile]) -> list[StoredFile]:
    """The part of ``batch`` the session's filter keeps; the rest is ignored with the rule as reason."""
    flt: IntakeFilter = session.intake_filter
    kept = []
    for item in batch:
        reason = flt.drop_reason(item.header.study_date, item.header.study_time)
        if reason is None and flt.excluded_series == DROP:
            excluded = series_verdict(session, item)
            if excluded:
                reason = f"{excluded}: dropped by the intake filter ({flt.name})"
        if reason:
            _discard(session, item, reason)
        else:
            kept.append(item)
    return kept


def mark_excluded_series(session, batch: list[StoredFile]) -> None:
    """Catalogued series the filter excludes are kept out of processing (``Series.processing_excluded``)."""
    from dicomflow.catalog.models import Series

    reasons: dict[str, list[str]] = {}
    for item in batch:
        reason = series_verdict(session, item)
        if reason:
            reasons.setdefault(reason, []).append(item.header.series_instance_uid)
    for reason, uids in reasons.items():
        Series.objects.filter(series_instance_uid__in=set(uids), processing_excluded="").update(
            processing_excluded=reason[:200])
