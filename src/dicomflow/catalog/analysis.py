"""Writes of the catalog's analysis: RT graph edges and check results per study, sanity results.

``analyse_studies`` runs the same core code as ``dicomflow rt tree`` / ``dicomflow check`` on what
the catalog holds, and replaces the stored edges and check results of those studies in one
transaction. Its input is one :class:`InstanceRefRecord` per instance: built from the stored file
(header only, in parallel for many files) the first time an instance is analysed, then reused, so
a study that grows is not re-read. Structure-set contour points are not stored: the few RTSTRUCT
files are re-read from the store for the RT QC (see ``models_rt``).

Scope: the graph is built over all studies of the patients concerned, so a structure set in one
study referencing a CT in another is linked; studies whose stored edges name as missing a series
or instance that has now arrived are re-analysed too. References to another patient's data stay
missing.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dicomflow.catalog.models import (
    CheckFinding,
    Instance,
    InstanceRefRecord,
    Patient,
    SanityOverride,
    SanityResult,
    Series,
    SeriesCheck,
    SeriesReference,
    Study,
)
from dicomflow.core.checks import (
    DoseGrid,
    ExpectedSubject,
    Finding,
    InstanceRecord,
    PatientHeader,
    SliceGeometry,
    check_sanity,
    record_from_dataset,
    run_checks,
    structure_set_summary,
)
from dicomflow.core.checks.findings import worst
from dicomflow.core.checks.geometry import Box
from dicomflow.core.rt import InstanceRef, RefKind, RTGraph, read_header
from dicomflow.core.rt.scan import _read_and_extract
from dicomflow.core.store import FileStore
from dicomflow.errors import InputError

log = logging.getLogger(__name__)

#: Bump when the stored record layout or its extraction changes: older records are re-read.
RECORD_FORMAT = 1
#: Below this many files to read, a process pool costs more than it saves.
PARALLEL_THRESHOLD = 200
_CHUNK = 500  # rows per IN (...) query


# --- record <-> JSON ------------------------------------------------------------------------------
def _floats(values) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _slice_to_json(s: SliceGeometry) -> list:
    return [
        s.instance_number,
        _floats(s.position),
        _floats(s.orientation),
        _floats(s.pixel_spacing),
        s.rows,
        s.columns,
        s.slice_thickness,
        s.frame,
    ]


def _slice_from_json(sop_uid: str, v: list) -> SliceGeometry:
    tup = lambda x: tuple(x) if x is not None else None  # noqa: E731
    return SliceGeometry(sop_uid, v[0], tup(v[1]), tup(v[2]), tup(v[3]), v[4], v[5], v[6], v[7])


def _box_to_json(box: Box) -> dict:
    return {
        "origin": _floats(box.origin),
        "axes": [_floats(a) for a in box.axes],
        "extents": _floats(box.extents),
        "margins": _floats(box.margins),
    }


def _box_from_json(d: dict) -> Box:
    return Box(tuple(d["origin"]), tuple(tuple(a) for a in d["axes"]), tuple(d["extents"]), tuple(d["margins"]))


def record_to_fields(record: InstanceRecord) -> dict:
    """The JSON columns of an :class:`InstanceRefRecord` for one core record."""
    grid = record.dose_grid
    return {
        "format_version": RECORD_FORMAT,
        "ref": record.ref.to_dict(),
        "patient": {
            "study_instance_uid": record.patient.study_instance_uid,
            "patient_id": record.patient.patient_id,
            "patient_name": record.patient.patient_name,
            "patient_sex": record.patient.patient_sex,
            "patient_birth_date": record.patient.patient_birth_date,
        },
        "slices": [_slice_to_json(s) for s in record.slices],
        "validity": [f.as_dict() for f in record.validity],
        "dose_grid": None if grid is None else {"frame_of_reference_uid": grid.frame_of_reference_uid, "box": _box_to_json(grid.box)},
    }


def record_from_fields(row: dict, path: str | None = None) -> InstanceRecord:
    """Rebuild the core record from stored columns (structure-set summary not included)."""
    ref = InstanceRef.from_dict(row["ref"])
    if path is not None:
        ref = dataclasses.replace(ref, path=path)
    grid = row.get("dose_grid")
    return InstanceRecord(
        ref,
        PatientHeader(**row["patient"]),
        slices=tuple(_slice_from_json(ref.sop_instance_uid, v) for v in row.get("slices") or ()),
        validity=tuple(Finding.from_dict(f) for f in row.get("validity") or ()),
        dose_grid=None if grid is None else DoseGrid(grid["frame_of_reference_uid"], _box_from_json(grid["box"])),
    )


# --- reading files from the store -----------------------------------------------------------------
def _read_structure_set(path: str):
    ds = read_header(path)
    return None if ds is None else structure_set_summary(ds)


def read_records(paths: list[str], workers: int | None = None) -> list[InstanceRecord | None]:
    """Core records of these files (headers only), None where a file is not usable DICOM.

    Many files are read by a pool of *spawned* processes running the core reader (no Django in
    them; forking a process that holds database connections is avoided).
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(paths) >= PARALLEL_THRESHOLD else 1
    if multiprocessing.current_process().daemon:
        workers = 1  # inside a Celery prefork child: daemonic processes may not have children
    jobs = [(p, record_from_dataset) for p in paths]
    if workers <= 1:
        results = [_read_and_extract(job) for job in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(_read_and_extract, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    return [record for _, record in results]


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _Loaded:
    records: list[InstanceRecord] = field(default_factory=list)
    unreadable: int = 0
    read_from_store: int = 0


def load_records(study_ids: Iterable[int], workers: int | None = None) -> _Loaded:
    """Core records of every instance of these studies, reading (and storing) the ones not yet recorded.

    RTSTRUCT records get their structure-set summary from the stored file.
    """
    study_ids = sorted(set(study_ids))
    store = FileStore(settings.STORE_DIR, settings.DICOMFLOW_FSYNC)
    out = _Loaded()
    stored = {
        row["instance_id"]: row
        for row in InstanceRefRecord.objects.filter(study_id__in=study_ids, format_version=RECORD_FORMAT).values(
            "instance_id", "ref", "patient", "slices", "validity", "dose_grid"
        )
    }
    instances = list(
        Instance.objects.filter(series__study_id__in=study_ids).values_list("id", "stored_path", "series__study_id")
    )
    to_read = [(iid, rel, sid) for iid, rel, sid in instances if iid not in stored]
    paths = {iid: str(store.path_of(rel)) for iid, rel, _ in instances}
    fresh: dict[int, InstanceRecord] = {}
    if to_read:
        results = read_records([paths[iid] for iid, _, _ in to_read], workers)
        rows = []
        for (iid, _, sid), record in zip(to_read, results):
            if record is None:
                out.unreadable += 1
                continue
            fresh[iid] = record
            rows.append(InstanceRefRecord(instance_id=iid, study_id=sid, **record_to_fields(record)))
        with transaction.atomic():
            InstanceRefRecord.objects.filter(instance_id__in=[iid for iid, _, _ in to_read]).delete()  # old formats
            InstanceRefRecord.objects.bulk_create(rows, batch_size=_CHUNK, ignore_conflicts=True)
        out.read_from_store = len(rows)
    structure_sets_to_read = []
    for iid, _, _ in instances:
        record = fresh.get(iid)
        if record is None and iid in stored:
            record = record_from_fields(stored[iid], paths[iid])
            if record.ref.modality == "RTSTRUCT":
                structure_sets_to_read.append(record)
        if record is not None:
            out.records.append(record)
    for record in structure_sets_to_read:
        record.structure_set = _read_structure_set(record.ref.path)
    return out


# --- analysis -------------------------------------------------------------------------------------
@dataclass
class AnalysisSummary:
    studies: list[int] = field(default_factory=list)
    series: int = 0
    edges: int = 0
    missing_references: int = 0
    findings: int = 0
    read_from_store: int = 0
    unreadable: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _studies_waiting_for(study_ids: list[int]) -> set[int]:
    """Other studies whose stored edges name as missing a series or instance of these studies."""
    waiting: set[int] = set()
    series_uids = list(Series.objects.filter(study_id__in=study_ids).values_list("series_instance_uid", flat=True))
    for chunk in _chunks(series_uids):
        waiting.update(SeriesReference.objects.filter(missing=True, target_uid__in=chunk).values_list("study_id", flat=True))
    if SeriesReference.objects.filter(missing=True).exclude(study_id__in=study_ids).exists():
        instance_uids = list(
            Instance.objects.filter(series__study_id__in=study_ids).values_list("sop_instance_uid", flat=True)
        )
        for chunk in _chunks(instance_uids):
            waiting.update(
                SeriesReference.objects.filter(missing=True, target_uid__in=chunk).values_list("study_id", flat=True)
            )
    return waiting - set(study_ids)


def _missing_kinds(records: list[InstanceRecord]) -> dict[tuple[str, str], str]:
    """(source series, missing uid) → the kind of reference that named it (the first, sorted)."""
    kinds: dict[tuple[str, str], str] = {}
    for r in records:
        for ref in sorted(r.ref.references, key=lambda x: x.kind.value):
            key = ref.uid if ref.kind == RefKind.SERIES else (ref.series_uid or ref.uid)
            kinds.setdefault((r.ref.series_instance_uid, key), ref.kind.value)
    return kinds


def analyse_studies(study_ids: Iterable[int], workers: int | None = None) -> AnalysisSummary:
    """Rebuild the RT edges and check results of these studies from the catalog (idempotent).

    Unknown study ids are ignored (a study may have been deleted since the task was queued).
    """
    requested = set(Study.objects.filter(id__in=set(study_ids)).values_list("id", flat=True))
    summary = AnalysisSummary()
    if not requested:
        return summary
    targets = requested | _studies_waiting_for(sorted(requested))
    patients = set(Study.objects.filter(id__in=targets).values_list("patient_id", flat=True))
    context = sorted(Study.objects.filter(patient_id__in=patients).values_list("id", flat=True))
    loaded = load_records(context, workers)
    summary.read_from_store, summary.unreadable = loaded.read_from_store, loaded.unreadable

    records = loaded.records
    graph = RTGraph.from_instances(r.ref for r in records)
    reports = run_checks(records)
    series_rows = {
        uid: (sid, study_id)
        for uid, sid, study_id in Series.objects.filter(study_id__in=context).values_list(
            "series_instance_uid", "id", "study_id"
        )
    }
    kinds = _missing_kinds(records)
    now = timezone.now()
    checks: list[SeriesCheck] = []
    findings_of: list[list[Finding]] = []
    for report in reports:
        sid, study_id = series_rows.get(report.uid, (None, None))
        if study_id not in targets:
            continue  # context only, or a header naming a series the catalog files elsewhere
        node = graph.series[report.uid]
        level = worst(report.findings)
        checks.append(
            SeriesCheck(
                series_id=sid,
                study_id=study_id,
                checked_at=now,
                modality=report.modality[:16],
                instances=report.instances,
                complete=report.complete,
                missing_slices=[float(p) for p in report.missing_slices],
                worst_severity=level.value if level else "",
                approval_status=node.approval_status.value if node.approval_status else "",
                review_date=(node.review_date or "")[:16],
                review_time=(node.review_time or "")[:32],
                reviewer_name=(node.reviewer_name or "")[:324],
                missing_frames_of_reference=sorted(node.missing_frames_of_reference),
            )
        )
        findings_of.append(report.findings)
    references: list[SeriesReference] = []
    for edge in graph.edges():
        sid, study_id = series_rows.get(edge.source, (None, None))
        target = series_rows.get(edge.target)
        if study_id in targets and target is not None:
            references.append(
                SeriesReference(study_id=study_id, source_id=sid, target_id=target[0], target_uid=edge.target, via=edge.via.value)
            )
    for uid, node in graph.series.items():
        sid, study_id = series_rows.get(uid, (None, None))
        if study_id not in targets:
            continue
        for missing in sorted(node.missing_references):
            via = kinds.get((uid, missing), RefKind.INSTANCE.value)
            references.append(SeriesReference(study_id=study_id, source_id=sid, target_uid=missing[:64], via=via, missing=True))
        for frame in sorted(node.missing_frames_of_reference):
            references.append(
                SeriesReference(
                    study_id=study_id, source_id=sid, target_uid=frame[:64], via=RefKind.FRAME_OF_REFERENCE.value, missing=True
                )
            )
    with transaction.atomic():
        # Two workers analysing the same studies take turns here (PostgreSQL; SQLite writers do anyway).
        list(Study.objects.select_for_update().filter(id__in=targets).order_by("id").values_list("id", flat=True))
        SeriesReference.objects.filter(study_id__in=targets).delete()
        SeriesCheck.objects.filter(study_id__in=targets).delete()  # findings cascade
        SeriesCheck.objects.bulk_create(checks, batch_size=_CHUNK)
        CheckFinding.objects.bulk_create(
            [
                CheckFinding(
                    series_check_id=check.id, series_id=check.series_id, position=i,
                    severity=f.severity.value, code=f.code.value, message=f.message,
                )
                for check, findings in zip(checks, findings_of)
                for i, f in enumerate(findings)
            ],
            batch_size=_CHUNK,
        )
        SeriesReference.objects.bulk_create(references, batch_size=_CHUNK, ignore_conflicts=True)
    summary.studies = sorted(targets)
    summary.series = len(checks)
    summary.edges = sum(1 for r in references if not r.missing)
    summary.missing_references = sum(1 for r in references if r.missing)
    summary.findings = sum(len(f) for f in findings_of)
    log.info("analysed %d studies: %d series, %d edges, %d findings", len(targets), summary.series, summary.edges, summary.findings)
    return summary


def analyse_all(workers: int | None = None, batch: int = 200) -> AnalysisSummary:
    """Analyse every study of the catalog, a batch of studies at a time."""
    total = AnalysisSummary()
    ids = list(Study.objects.order_by("id").values_list("id", flat=True))
    done: set[int] = set()
    for chunk in _chunks(ids, batch):
        part = analyse_studies(chunk, workers)
        done.update(part.studies)
        for key in ("series", "edges", "missing_references", "findings", "read_from_store", "unreadable"):
            setattr(total, key, getattr(total, key) + getattr(part, key))
    total.studies = sorted(done)
    return total


# --- sanity ---------------------------------------------------------------------------------------
def record_sanity(
    target: Study | Patient,
    expected: ExpectedSubject,
    *,
    source: str = "user",
    subject=None,
    subject_ref: str = "",
    user=None,
) -> SanityResult:
    """Compare the headers of a study (or of all a patient's studies) with the expected subject and store it."""
    from dicomflow.catalog.models import ExpectedSource

    if not (expected.sex or expected.birth_date or expected.birth_year is not None):
        raise InputError("give the expected sex, birth date or birth year to compare the data with")
    if source not in ExpectedSource.values:
        raise InputError(f"expected source must be one of {', '.join(ExpectedSource.values)}")
    if isinstance(target, Study):
        patient, study, study_ids = target.patient, target, [target.id]
    elif isinstance(target, Patient):
        patient, study = target, None
        study_ids = list(target.studies.values_list("id", flat=True))
    else:
        raise InputError("a sanity check is made for a study or a patient")
    records = load_records(study_ids).records
    result = check_sanity((r.patient for r in records), expected)
    return SanityResult.objects.create(
        patient=patient,
        study=study,
        expected_source=source,
        subject=subject,
        subject_ref=subject_ref[:128],
        expected_sex=(expected.sex or "")[:16],
        expected_birth_date=(expected.birth_date or "")[:8],
        expected_birth_year=expected.birth_year,
        status=result.status.value,
        compared=result.compared,
        findings=[f.as_dict() for f in result.findings],
        checked_by=user if getattr(user, "pk", None) else None,
    )


def expected_of_subject(subject) -> ExpectedSubject:
    """What a research subject (``projects.Subject``) says the data must show."""
    birth = subject.expected_birth_date
    return ExpectedSubject(
        sex=subject.expected_sex or None,
        birth_date=birth.strftime("%Y%m%d") if birth else None,
        birth_year=subject.expected_birth_year,
    )


def record_sanity_for_subject(subject, target: Study | Patient | None = None, user=None) -> SanityResult:
    """Sanity of a subject's data (default: the clinical patient it is enrolled as) against the subject."""
    target = target if target is not None else subject.patient
    if target is None:
        raise InputError("this subject is not linked to a patient of the catalog; give the study to check")
    return record_sanity(target, expected_of_subject(subject), source="subject", subject=subject, user=user)


def override_sanity(result: SanityResult, user, reason: str, status: str = "MATCHES") -> SanityOverride:
    """Record that ``user`` accepts ``result`` as ``status`` for ``reason``; the result itself stays."""
    from dicomflow.catalog.models import SanityStatusChoice

    reason = (reason or "").strip()
    if not reason:
        raise InputError("an override of a sanity result needs a reason; say why the data belongs to the subject")
    if user is None or not getattr(user, "pk", None):
        raise InputError("an override of a sanity result must name the user who makes it")
    if status not in SanityStatusChoice.values:
        raise InputError(f"override status must be one of {', '.join(SanityStatusChoice.values)}")
    return SanityOverride.objects.create(
        result=result, status=status, reason=reason, user=user, username=user.get_username()[:150]
    )
