"""When a structure set arrives for a series that has a processing result — typically the
clinician's edited version of it, sent back from the TPS — compare the two and keep the numbers
with the job. A listener on ``import_finished`` (every source sends it once per import)."""

from __future__ import annotations

import logging

from django.db import transaction

log = logging.getLogger(__name__)


def comparisons_to_make(series_ids) -> list[tuple[int, int]]:
    """(job id, instance id) for every new structure set in ``series_ids`` that references the input
    series of a finished job, leaving out the jobs' own results and pairs already compared."""
    from dicomflow.catalog.models import RTStructureSet
    from dicomflow.core.dicom.sop import RT_STRUCTURE_SET
    from dicomflow.processing.models import Job, JobStatus
    from dicomflow.processing.services import RESULTS_SOURCE
    from dicomflow.quality.models import StructureComparison

    sets = (RTStructureSet.objects.filter(instance__series_id__in=series_ids, instance__sop_class_uid=RT_STRUCTURE_SET)
            .exclude(instance__received_from__startswith=RESULTS_SOURCE).exclude(referenced_series_uid="")
            .values_list("instance_id", "referenced_series_uid"))
    pairs = []
    for instance_id, series_uid in sets:
        jobs = Job.objects.filter(series__series_instance_uid=series_uid, status=JobStatus.FINISHED).values_list("pk", flat=True)
        for job_id in jobs:
            if not StructureComparison.objects.filter(job_id=job_id, reference_id=instance_id).exists():
                pairs.append((job_id, instance_id))
    return pairs


def _enqueue(series_ids) -> None:
    from dicomflow.quality import tasks

    try:
        for job_id, instance_id in comparisons_to_make(series_ids):
            tasks.compare_with_result.apply_async((job_id, instance_id), retry=False)
    except Exception as exc:  # a broker hiccup must never break an import
        log.warning("could not enqueue structure-set comparisons (%s)", exc.__class__.__name__)


def compare_after_import(sender, imported, **kwargs) -> None:
    if imported.instances_new and imported.series_ids:
        series_ids = frozenset(imported.series_ids)
        transaction.on_commit(lambda: _enqueue(series_ids))


def connect() -> None:
    from dicomflow.catalog.signals import import_finished

    import_finished.connect(compare_after_import, dispatch_uid="quality-compare-after-import")
