"""Reads of the catalog, shared by the REST API, the web UI and the CLI: counts, filters, series
details, ZIP streaming of a series' stored files.

Filters take the query parameters as given (a ``QueryDict`` or dict) and a queryset already
restricted to what the user may see (``dicomflow.projects.selectors.visible_*``), so the front
ends filter the same way. Dates are ISO ``YYYY-MM-DD``; a malformed one is an ``InputError``
naming the parameter. RT trees and stored check results are in ``catalog.rt_selectors``.
"""

from __future__ import annotations

import datetime as dt
import os
import zipfile
from collections.abc import Iterator, Mapping

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from dicomflow.catalog.models import ImageInformation, Instance, Patient, Series, Study
from dicomflow.errors import InputError, StorageError


def catalog_counts() -> dict[str, int]:
    return {
        "patients": Patient.objects.count(),
        "studies": Study.objects.count(),
        "series": Series.objects.count(),
        "instances": Instance.objects.count(),
    }


# --- filters -------------------------------------------------------------------------------------------
FILTERS = {
    "patients": ("patient_id", "name", "project", "q"),
    "studies": ("patient", "patient_id", "name", "study_uid", "accession_number", "modality", "date_from", "date_to",
                "project", "q"),
    "series": ("patient", "patient_id", "study_uid", "series_uid", "modality", "date_from", "date_to", "project", "q"),
    "instances": ("series_uid", "sop_instance_uid", "sop_class_uid"),
}


def _date(params: Mapping, name: str) -> dt.date | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InputError(f"parameter {name} must be a date as YYYY-MM-DD") from None


def _int(params: Mapping, name: str) -> int | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"parameter {name} must be a whole number") from None


def _text(params: Mapping, name: str) -> str:
    return (params.get(name) or "").strip()


def _project(qs: QuerySet, params: Mapping) -> QuerySet:
    """``project=<key>``: that project's de-identified copy; ``project=clinical``: the clinical pool."""
    value = _text(params, "project")
    if not value:
        return qs
    return qs.filter(project__isnull=True) if value == "clinical" else qs.filter(project__key=value)


def _count_of(rows: QuerySet, key: str):
    """The number of ``rows`` per outer row as a correlated subquery (0 when none).

    Unlike ``Count()`` over a join it needs no GROUP BY of the outer rows: the database counts for
    the rows of the page only, and the paginator's COUNT(*) leaves it out (a million instances).
    """
    counted = rows.order_by().values(key).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def filter_patients(qs: QuerySet, params: Mapping) -> QuerySet:
    qs = _project(qs, params)
    if value := _text(params, "patient_id"):
        qs = qs.filter(patient_id=value)
    if value := _text(params, "name"):
        qs = qs.filter(patient_name__icontains=value)
    if value := _text(params, "q"):  # the web search box: ID prefix or part of the name
        qs = qs.filter(Q(patient_id__istartswith=value) | Q(patient_name__icontains=value))
    return qs.annotate(study_count=_count_of(Study.objects.filter(patient=OuterRef("pk")), "patient"))


def filter_studies(qs: QuerySet, params: Mapping) -> QuerySet:
    qs = _project(qs, params)
    if (value := _int(params, "patient")) is not None:
        qs = qs.filter(patient_id=value)
    if value := _text(params, "patient_id"):
        qs = qs.filter(patient__patient_id=value)
    if value := _text(params, "name"):
        qs = qs.filter(patient__patient_name__icontains=value)
    if value := _text(params, "study_uid"):
        qs = qs.filter(study_instance_uid=value)
    if value := _text(params, "accession_number"):
        qs = qs.filter(accession_number=value)
    if value := _text(params, "modality"):
        qs = qs.filter(series__modality=value.upper()).distinct()
    if value := _date(params, "date_from"):
        qs = qs.filter(study_date__gte=value)
    if value := _date(params, "date_to"):
        qs = qs.filter(study_date__lte=value)
    if value := _text(params, "q"):
        qs = qs.filter(
            Q(description__icontains=value) | Q(accession_number=value) | Q(study_instance_uid=value)
            | Q(patient__patient_id__istartswith=value) | Q(patient__patient_name__icontains=value)
        )
    return qs.select_related("patient", "project").annotate(series_count=Count("series", distinct=True))


def filter_series(qs: QuerySet, params: Mapping) -> QuerySet:
    qs = _project(qs, params)
    if (value := _int(params, "patient")) is not None:
        qs = qs.filter(study__patient_id=value)
    if value := _text(params, "patient_id"):
        qs = qs.filter(study__patient__patient_id=value)
    if value := _text(params, "study_uid"):
        qs = qs.filter(study__study_instance_uid=value)
    if value := _text(params, "series_uid"):
        qs = qs.filter(series_instance_uid=value)
    if value := _text(params, "modality"):
        qs = qs.filter(modality=value.upper())
    if value := _date(params, "date_from"):
        qs = qs.filter(Q(series_date__gte=value) | Q(series_date__isnull=True, study__study_date__gte=value))
    if value := _date(params, "date_to"):
        qs = qs.filter(Q(series_date__lte=value) | Q(series_date__isnull=True, study__study_date__lte=value))
    if value := _text(params, "q"):
        qs = qs.filter(Q(description__icontains=value) | Q(series_instance_uid=value) | Q(modality=value.upper()))
    return qs.select_related("study", "study__patient", "project").annotate(
        instance_count=_count_of(Instance.objects.filter(series=OuterRef("pk")), "series"))


def filter_instances(qs: QuerySet, params: Mapping) -> QuerySet:
    if value := _text(params, "series_uid"):
        qs = qs.filter(series__series_instance_uid=value)
    if value := _text(params, "sop_instance_uid"):
        qs = qs.filter(sop_instance_uid=value)
    if value := _text(params, "sop_class_uid"):
        qs = qs.filter(sop_class_uid=value)
    return qs.select_related("series", "image")


# --- series details ----------------------------------------------------------------------------------
def image_geometry(series: Series) -> dict | None:
    """Geometry of an image series from the catalogued headers (no file is read), or None."""
    rows = list(
        ImageInformation.objects.filter(instance__series=series).values_list(
            "rows", "columns", "number_of_frames", "pixel_spacing", "slice_thickness",
            "image_orientation_patient", "image_position_patient", "bits_allocated", "photometric_interpretation",
        )
    )
    if not rows:
        return None
    first = rows[0]
    positions = [r[6] for r in rows if r[6]]
    orientation = first[5]
    along = []
    if orientation and len(orientation) == 6 and positions:
        r, c = orientation[:3], orientation[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
        along = sorted(sum(n * p for n, p in zip(normal, pos, strict=False)) for pos in positions)
    gaps = [round(b - a, 4) for a, b in zip(along, along[1:], strict=False)]
    return {
        "rows": first[0],
        "columns": first[1],
        "frames": sum(r[2] or 1 for r in rows),
        "pixel_spacing": first[3],
        "slice_thickness": first[4],
        "image_orientation_patient": orientation,
        "bits_allocated": first[7],
        "photometric_interpretation": first[8],
        "slices": len(positions),
        "extent_mm": [round(along[0], 3), round(along[-1], 3)] if along else None,
        "slice_spacing_mm": sorted(set(gaps))[:5],
        "uniform_dimensions": len({(r[0], r[1]) for r in rows}) == 1,
    }


def rt_details(series: Series) -> dict:
    """RT objects of a series: structure sets (with ROIs), plans, doses, RT images."""
    instances = Instance.objects.filter(series=series)
    out: dict = {}
    sets = []
    for inst in instances.filter(structure_set__isnull=False).select_related("structure_set").prefetch_related(
        "structure_set__rois"
    ):
        ss = inst.structure_set
        sets.append({
            "sop_instance_uid": inst.sop_instance_uid, "label": ss.label, "name": ss.name,
            "approval_status": ss.approval_status or None, "referenced_series_uid": ss.referenced_series_uid or None,
            "rois": [
                {"number": r.number, "name": r.name, "interpreted_type": r.interpreted_type, "color": r.color,
                 "contours": r.contour_count}
                for r in ss.rois.all()
            ],
        })
    if sets:
        out["structure_sets"] = sets
    plans = [
        {"sop_instance_uid": i.sop_instance_uid, "label": i.plan.label, "name": i.plan.name,
         "approval_status": i.plan.approval_status or None, "fractions_planned": i.plan.fractions_planned,
         "beams": i.plan.beam_count, "referenced_structure_set_uid": i.plan.referenced_structure_set_uid or None}
        for i in instances.filter(plan__isnull=False).select_related("plan")
    ]
    if plans:
        out["plans"] = plans
    doses = [
        {"sop_instance_uid": i.sop_instance_uid, "dose_type": i.dose.dose_type,
         "dose_summation_type": i.dose.dose_summation_type, "dose_units": i.dose.dose_units,
         "referenced_plan_uid": i.dose.referenced_plan_uid or None}
        for i in instances.filter(dose__isnull=False).select_related("dose")
    ]
    if doses:
        out["doses"] = doses
    images = [
        {"sop_instance_uid": i.sop_instance_uid, "label": i.rt_image.label,
         "referenced_plan_uid": i.rt_image.referenced_plan_uid or None,
         "referenced_beam_number": i.rt_image.referenced_beam_number}
        for i in instances.filter(rt_image__isnull=False).select_related("rt_image")
    ]
    if images:
        out["rt_images"] = images
    return out


def series_checks(series: Series) -> dict | None:
    """The stored check results of the series (``rt_selectors.series_checks``), None before analysis."""
    from dicomflow.catalog import rt_selectors

    return rt_selectors.series_checks(series)


# --- ZIP download --------------------------------------------------------------------------------------
class _Sink:
    """A write-only file for ``zipfile`` whose bytes are handed out as they are produced."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def member_name(instance: Instance) -> str:
    """``<SOP Instance UID>.dcm`` — UIDs only, never names or IDs."""
    return os.path.basename(instance.stored_path) or f"{instance.sop_instance_uid}.dcm"


def check_series_files(series: Series) -> None:
    """Refuse before streaming if the store lacks any file of the series (a ZIP cut short is worse)."""
    store = settings.STORE_DIR
    missing = sum(1 for p in Instance.objects.filter(series=series).values_list("stored_path", flat=True).iterator()
                  if not os.path.isfile(store / p))
    if missing:
        raise StorageError(f"{missing} file(s) of this series are missing from the file store; "
                           "an administrator should restore them or import the series again")


def stream_series_zip(series: Series, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """The series' stored files as a ZIP (stored, not deflated: DICOM pixels barely compress), streamed.

    Files are read from the store in ``chunk`` pieces; memory stays at one chunk whatever the size.
    """
    sink = _Sink()
    store = settings.STORE_DIR
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for stored_path, name in _members(series):
            with open(store / stored_path, "rb") as src, zf.open(name, "w", force_zip64=True) as dst:
                while block := src.read(chunk):
                    dst.write(block)
                    if sink.parts:
                        yield sink.take()
            if sink.parts:
                yield sink.take()
    yield sink.take()  # the central directory


def _members(series: Series) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for inst in Instance.objects.filter(series=series).only("stored_path", "sop_instance_uid").iterator():
        name = member_name(inst)
        if name in seen:
            name = f"{inst.sop_instance_uid}.dcm"
        seen.add(name)
        yield inst.stored_path, name
