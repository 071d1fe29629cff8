"""RT quality services: rate a job's contours, compare results with edited structure sets, import
Eclipse structure templates into a template. Each takes the acting user first and checks the role
in the job's project (rating and template edits are writes; the CSV and statistics are reads in
``selectors``)."""

from __future__ import annotations

import logging
from pathlib import Path

from django.db import transaction

from dicomflow.errors import InputError, NotFoundError
from dicomflow.processing.models import Job, JobStatus, Result, ResultKind
from dicomflow.projects.models import Capability
from dicomflow.quality.models import JobRating, Rating, RoiRating, StructureComparison

log = logging.getLogger(__name__)

MAX_MINUTES = 24 * 60
MAX_COMMENT = 2000


def job_for(actor, job_id: int, capability: str = Capability.VIEW) -> Job:
    """The job if ``actor`` may do ``capability`` in its project (NotFoundError / PermissionDeniedError)."""
    from dicomflow.processing.services import _visible_job

    return _visible_job(actor, job_id, capability)


def result_structure_set(job: Job) -> Path | None:
    """The job's RTSTRUCT result as it went out (re-identified when it was), or None."""
    for result in Result.objects.filter(job=job, kind=ResultKind.RTSTRUCT).order_by("pk"):
        for candidate in (result.path, result.deidentified_path):
            if candidate and Path(candidate).is_file():
                return Path(candidate)
    return None


def result_roi_names(job: Job) -> list[str]:
    """The ROI names of the job's returned structure set (what can be rated)."""
    import pydicom

    path = result_structure_set(job)
    if path is None:
        return []
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StructureSetROISequence"])
    return [str(r.ROIName) for r in ds.get("StructureSetROISequence", [])]


def _clean_text(value, what: str) -> str:
    text = str(value or "").strip()
    if len(text) > MAX_COMMENT:
        raise InputError(f"{what} is longer than {MAX_COMMENT} characters")
    return text


def _whole_number(value, what: str, low: int, high: int, optional: bool = False) -> int | None:
    if optional and value in (None, ""):
        return None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high or (isinstance(value, float) and value != int(value)):
        raise InputError(f"{what} must be a whole number from {low} to {high}")
    return number


def rate_job(actor, job_id: int, *, overall_score, comment: str = "", rois: list[dict]) -> JobRating:
    """Record (or replace) the actor's rating of a job's returned contours: per ROI a rating, the
    minutes spent editing and a comment, and an overall score 0-10. Needs Manage in the project;
    only jobs whose result came back (finished, or waiting for quality control) can be rated."""
    job = job_for(actor, job_id, Capability.MANAGE)
    if job.status not in (JobStatus.FINISHED, JobStatus.WAITING):
        raise InputError(f"job #{job.pk} has no result to rate yet (it is {job.get_status_display().lower()})")
    names = result_roi_names(job)
    if not names:
        raise InputError(f"job #{job.pk} returned no structure set to rate")
    score = _whole_number(overall_score, "the overall score", 0, 10)
    if not isinstance(rois, list) or not rois:
        raise InputError("rate at least one structure")
    by_name = {n.casefold(): n for n in names}
    cleaned, seen = [], set()
    for item in rois:
        if not isinstance(item, dict):
            raise InputError("each structure's rating is an object with 'name' and 'rating'")
        name = by_name.get(str(item.get("name", "")).strip().casefold())
        if name is None:
            raise InputError(f"the result has no structure named '{str(item.get('name', ''))[:64]}' "
                             f"(it has {', '.join(names)})")
        if name in seen:
            raise InputError(f"structure '{name}' is rated twice")
        seen.add(name)
        value = str(item.get("rating", "")).strip()
        if value not in Rating.values:
            raise InputError(f"rating of '{name}' must be one of {', '.join(Rating.values)}")
        cleaned.append(RoiRating(roi_name=name, rating_value=value,
                                 minutes=_whole_number(item.get("minutes"), f"minutes for '{name}'", 0, MAX_MINUTES, True),
                                 comment=_clean_text(item.get("comment"), f"the comment on '{name}'")))
    assessor = actor if getattr(actor, "_meta", None) is not None and actor.pk else None  # the CLI operator is no row
    with transaction.atomic():
        rating, _ = JobRating.objects.update_or_create(
            job=job, assessor_name=actor.get_username(),
            defaults={"assessor": assessor, "overall_score": score, "comment": _clean_text(comment, "the comment")})
        rating.rois.all().delete()
        for row in cleaned:
            row.rating = rating
        RoiRating.objects.bulk_create(cleaned)
    return rating


def _stored(relative: str) -> Path:
    from django.conf import settings

    return Path(settings.STORE_DIR) / relative


def compare_with_result(job_id: int, reference_instance_id: int, tolerance_mm: float = 2.0) -> StructureComparison:
    """Compare a job's returned structure set with one that came back for its series (system
    action, run by a task after an import); stored with the job, errors stored too."""
    from dicomflow.catalog.models import Instance
    from dicomflow.core.quality.compare import compare_structure_sets, read_structure_set
    from dicomflow.errors import DicomflowError

    job = Job.objects.get(pk=job_id)
    reference = Instance.objects.select_related("series").get(pk=reference_instance_id)
    comparison, _ = StructureComparison.objects.get_or_create(job=job, reference=reference,
                                                              defaults={"tolerance_mm": tolerance_mm})
    try:
        result = result_structure_set(job)
        if result is None:
            raise InputError("the job has no structure set result to compare")
        image_paths = [_stored(p) for p in job.series.instances.values_list("stored_path", flat=True)] if job.series_id else None
        document = compare_structure_sets(read_structure_set(result), read_structure_set(_stored(reference.stored_path)),
                                          image_paths, tolerance_mm=tolerance_mm)
    except DicomflowError as exc:
        comparison.error = str(exc)[:2000]
        comparison.save(update_fields=["error"])
        log.warning("comparison for job #%s failed: %s", job.pk, exc.__class__.__name__)
        return comparison
    comparison.rois = document["rois"]
    comparison.only_in_result = document["only_in_a"]
    comparison.only_in_reference = document["only_in_b"]
    comparison.error = ""
    comparison.save()
    return comparison


def import_eclipse_structures(actor, template_name: str, xml: bytes) -> dict:
    """Replace a template's structure list with an Eclipse structure template's (XML), keeping each
    existing structure's processor key and label value when the names match. Validated like any
    template edit (TG-263 names unless the template says ``"nomenclature": "local"``)."""
    from dicomflow.core.quality.eclipse import read_structure_template
    from dicomflow.processing import services as processing
    from dicomflow.processing.models import Template

    row = Template.objects.filter(name=template_name).first()
    if row is None:
        raise NotFoundError(f"no template named '{template_name[:100]}'")
    parsed = read_structure_template(xml)
    definition = dict(row.definition)
    old = {str(r.get("name", "")).casefold(): r for r in definition.get("rois") or []}
    rois = []
    for structure in parsed["structures"]:
        before = old.get(structure["name"].casefold(), {})
        merged = dict(structure, key=before.get("key", structure["key"]))
        if before.get("label") is not None:
            merged["label"] = before["label"]
        rois.append(merged)
    definition["rois"] = rois
    updated = processing.update_template(actor, template_name, definition=definition)
    return {"template": updated.name, "structures": [r["name"] for r in rois], "source": parsed["name"]}
