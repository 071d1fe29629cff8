"""Query/Retrieve from a clinical PACS as services: find studies, pull them into the clinical pool.

Used by the CLI (``dicomflow qr find`` / ``qr get``, acting as the operator), the API
(``/api/qr/...``) and the lookup page ("Find in PACS" → **Pull** → **Stage**). Every call takes
the acting user first, checks the role and writes one audit entry (the node by name, counts only —
never a patient value or a clinical UID).

Who may: finding needs sight of the clinical pool (``projects.view_clinical_pool`` or superuser);
pulling also needs the right to add to it (the upload permission). The web and the API may only
name configured, enabled DICOM nodes; the command line may also give ``AET@HOST:PORT``.

Pulls run with C-GET by default: instances come back over our association and go through one
import session (dedupe, conflicts, reasons, the intake filter). With ``move=True`` the node is
asked to C-STORE them to this installation's receiver (``DICOMFLOW_SCP_AET``; it must be running
and configured on the node); the receiver imports them, and the counters are collected from its
import records for associations from the node's AE title that started after the request.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from dicomflow.accounts.audit import denied, record
from dicomflow.accounts.models import AuditAction, AuditOutcome
from dicomflow.core.intake_filter import IntakeFilter
from dicomflow.errors import DicomflowError, InputError, NetworkError, PermissionDeniedError
from dicomflow.export import qr
from dicomflow.export.models import DicomNode
from dicomflow.export.scu import as_remote_node
from dicomflow.intake.filters import named_filter
from dicomflow.intake.models import ImportRun, SourceKind
from dicomflow.intake.network.common import RemoteNode, parse_node
from dicomflow.intake.services import file_store
from dicomflow.intake.sessions import ImportReport, ImportSession
from dicomflow.projects.selectors import can_see_clinical, can_upload

log = logging.getLogger(__name__)

MOVE_SETTLE_SECONDS = 60.0  # how long the receiver gets to catalogue what a C-MOVE sent


def query_nodes():
    """The DICOM nodes one may query from the web and the API: configured and enabled."""
    return DicomNode.objects.filter(enabled=True).order_by("name")


def resolve_node(spec: str, *, allow_address: bool = False, our_ae_title: str | None = None
                 ) -> tuple[RemoteNode, DicomNode | None]:
    """A configured node by name, or (``allow_address``: the command line) ``AET@HOST:PORT``."""
    spec = (spec or "").strip()
    if not spec:
        raise InputError("name the DICOM node to query")
    if "@" in spec:
        if not allow_address:
            raise InputError("only configured DICOM nodes may be queried here; give the node's name")
        return parse_node(spec, our_ae_title or settings.DICOMFLOW_SCP_AET), None
    row = DicomNode.objects.filter(name=spec).first()
    if row is None:
        raise InputError(f"no DICOM node named '{spec}' is configured (admin: Export → DICOM nodes)")
    if not row.enabled:
        raise InputError(f"DICOM node '{spec}' is disabled")
    return as_remote_node(row, our_ae_title), row


def _label(remote: RemoteNode, row: DicomNode | None) -> str:
    return f"node {row.name}" if row is not None else f"node {remote}"


def _keys_used(query: qr.Query) -> str:
    names = [k for k in ("patient_id", "patient_name", "date_from", "date_to", "modality", "accession_number",
                         "study_uid") if getattr(query, k)]
    return ", ".join(names) or "no keys"


def find_studies(actor, node: str, query: qr.Query, *, allow_address: bool = False,
                 our_ae_title: str | None = None, timeout: float = 30.0) -> list[dict]:
    """C-FIND studies on ``node``: ``[{"study_uid", "patient_id", "study_date", "modalities",
    "description", "series_count"}]``, each also with ``"in_catalog"`` (already in the clinical pool)."""
    remote, row = resolve_node(node, allow_address=allow_address, our_ae_title=our_ae_title)
    if not can_see_clinical(actor):
        denied(actor, AuditAction.QR_FIND, obj=_label(remote, row), detail="no sight of the clinical pool")
        raise PermissionDeniedError("querying a clinical PACS needs sight of the clinical pool")
    try:
        studies = qr.find_studies(remote, query, timeout=timeout)
    except DicomflowError as exc:
        record(actor, AuditAction.QR_FIND, obj=_label(remote, row), outcome=AuditOutcome.FAILED,
               detail=f"C-FIND failed: {exc.__class__.__name__}")
        raise
    from dicomflow.catalog.models import Study

    known = set(Study.objects.filter(project__isnull=True, study_instance_uid__in=[s["study_uid"] for s in studies])
                .values_list("study_instance_uid", flat=True))
    for s in studies:
        s["in_catalog"] = s["study_uid"] in known
    record(actor, AuditAction.QR_FIND, obj=_label(remote, row),
           detail=f"C-FIND (study level, keys: {_keys_used(query)}): {len(studies)} studies")
    return studies


def find_series(actor, node: str, study_uid: str, *, allow_address: bool = False, timeout: float = 30.0) -> list[dict]:
    """The series of one study on ``node`` (for choosing what to pull)."""
    remote, row = resolve_node(node, allow_address=allow_address)
    if not can_see_clinical(actor):
        denied(actor, AuditAction.QR_FIND, obj=_label(remote, row), detail="no sight of the clinical pool")
        raise PermissionDeniedError("querying a clinical PACS needs sight of the clinical pool")
    series = qr.find_series(remote, study_uid, timeout=timeout)
    record(actor, AuditAction.QR_FIND, obj=_label(remote, row), detail=f"C-FIND (series level): {len(series)} series")
    return series


def _pull_filter(row: DicomNode | None, filter_name: str | None) -> IntakeFilter:
    if filter_name:
        return named_filter(filter_name)
    if row is not None and row.intake_filter_id:
        return row.intake_filter.core()
    return named_filter(None)


def retrieve(actor, node: str, study_uid: str, series_uids: list[str] | None = None, *, move: bool = False,
             filter_name: str | None = None, allow_address: bool = False, our_ae_title: str | None = None,
             destination: str | None = None, timeout: float = 300.0) -> dict:
    """Pull a study (or some of its series) from ``node`` into the clinical pool.

    Returns the import contract's counters (``files_seen``, ``instances_new``, ``instances_duplicate``,
    ``conflicts``, ``ignored``, ``patients``, ``studies``, ``series``) plus ``method`` ("c-get" or
    "c-move"), ``retrieve`` (the node's final status and sub-operation counts) and ``import_runs``.
    """
    remote, row = resolve_node(node, allow_address=allow_address, our_ae_title=our_ae_title)
    label = _label(remote, row)
    if not (can_see_clinical(actor) and can_upload(actor)):
        denied(actor, AuditAction.QR_RETRIEVE, obj=label, detail="may not add to the clinical pool")
        raise PermissionDeniedError("pulling from a clinical PACS needs sight of the clinical pool and the right "
                                    "to add to it")
    series_uids = [s for s in (series_uids or []) if s]
    qr.retrieve_identifier(study_uid, series_uids)  # InputError before any association
    method = "c-move" if move else "c-get"
    try:
        if move:
            doc = _pull_by_move(remote, study_uid, series_uids, destination or settings.DICOMFLOW_SCP_AET, timeout)
        else:
            doc = _pull_by_get(remote, study_uid, series_uids, _pull_filter(row, filter_name), timeout)
    except DicomflowError as exc:
        record(actor, AuditAction.QR_RETRIEVE, obj=label, outcome=AuditOutcome.FAILED,
               detail=f"{method.upper()} failed: {exc.__class__.__name__}")
        raise
    doc["method"] = method
    sub = doc["retrieve"]
    outcome = AuditOutcome.OK if sub["failed"] == 0 and sub["status"] in ("0x0000", "0xB000") else AuditOutcome.FAILED
    record(actor, AuditAction.QR_RETRIEVE, obj=label, outcome=outcome,
           detail=(f"{method.upper()} ({'series' if series_uids else 'study'} level): "
                   f"{sub['completed']} completed, {sub['failed']} failed; {doc['files_seen']} files, "
                   f"{doc['instances_new']} new, {doc['instances_duplicate']} duplicate, "
                   f"{len(doc['conflicts'])} conflicts, {len(doc['ignored'])} ignored"))
    return doc


def _pull_by_get(remote: RemoteNode, study_uid: str, series_uids: list[str], flt: IntakeFilter,
                 timeout: float) -> dict:
    store = file_store()
    result, received = qr.get(remote, study_uid, series_uids or None, store=store, timeout=timeout)
    session = ImportSession(store, source_kind=SourceKind.QUERY_RETRIEVE, source=f"C-GET {remote}",
                            received_from=f"qr:{remote}", intake_filter=flt)
    session.open()
    session.report.files_seen = len(received.stored) + len(received.ignored)
    for display, reason in received.ignored:
        session.ignore(display, reason)
    size = settings.DICOMFLOW_IMPORT_BATCH
    for start in range(0, len(received.stored), size):
        session.record(received.stored[start:start + size])
    report = session.finish()
    doc = report.as_dict()
    doc["retrieve"] = result.as_dict()
    doc["import_runs"] = [report.import_run_id]
    doc["intake_filter"] = flt.name
    return doc


def _pull_by_move(remote: RemoteNode, study_uid: str, series_uids: list[str], destination: str,
                  timeout: float) -> dict:
    started = timezone.now() - timedelta(seconds=1)
    result = qr.move(remote, study_uid, series_uids or None, destination=destination, timeout=timeout)
    expected = result.completed + result.warning
    runs = ImportRun.objects.filter(source_kind=SourceKind.DICOM, started_at__gte=started,
                                    source__startswith=f"{remote.ae_title}@")

    def settled() -> bool:
        rows = list(runs.all())  # a fresh query each time (a QuerySet caches its rows)
        return (sum(r.files_seen for r in rows) >= expected and all(r.finished_at for r in rows)
                and (expected == 0 or bool(rows)))

    if not qr.wait_until(settled, MOVE_SETTLE_SECONDS):
        raise NetworkError(f"the receiver has not catalogued what {remote} sent within {MOVE_SETTLE_SECONDS:g} s "
                           f"(is the receiver {destination} running on this installation's database?)")
    report = ImportReport()
    rows = list(runs.order_by("started_at", "pk"))
    for run in rows:
        report.files_seen += run.files_seen
        report.instances_new += run.instances_new
        report.instances_duplicate += run.instances_duplicate
        report.conflicts.extend(run.conflicts or [])
        report.ignored.extend(run.ignored or [])
    doc = report.as_dict()
    if report.files_seen:
        doc.update(_touched(study_uid, series_uids))
    doc["retrieve"] = result.as_dict()
    doc["import_runs"] = [r.pk for r in rows]
    doc["destination"] = destination
    return doc


def _touched(study_uid: str, series_uids: list[str]) -> dict:
    """Distinct patients/studies/series of the pulled study (or series) now in the clinical pool."""
    from dicomflow.catalog.models import Series

    series = Series.objects.filter(project__isnull=True, study__study_instance_uid=study_uid)
    if series_uids:
        series = series.filter(series_instance_uid__in=series_uids)
    return {"patients": series.values("study__patient").distinct().count(),
            "studies": series.values("study").distinct().count(), "series": series.count()}
