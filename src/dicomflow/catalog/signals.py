"""Analysis after C-STORE receptions: the receiver catalogues without ``import_paths``, so the end of
its import record (an ImportRun of kind DICOM with new instances) queues the analysis of the
studies that received instances during the run. ``import_paths`` queues its own (``analyse=True``).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save


def studies_received_by(run) -> set[int]:
    """Studies with instances this receiver run catalogued (same source, since the run started)."""
    from dicomflow.catalog.models import Instance

    return set(
        Instance.objects.filter(received_at__gte=run.started_at, received_from=f"dicom:{run.source}"[:512])
        .values_list("series__study_id", flat=True)
        .distinct()
    )


def reception_finished(sender, instance, created, update_fields=None, **kwargs) -> None:
    from dicomflow.intake.models import SourceKind

    if created or instance.finished_at is None or instance.source_kind != SourceKind.DICOM:
        return
    if update_fields is not None and "finished_at" not in update_fields:
        return
    if not instance.instances_new:
        return

    def enqueue() -> None:
        from dicomflow.catalog.tasks import enqueue_analysis

        enqueue_analysis(studies_received_by(instance))

    transaction.on_commit(enqueue)


def connect() -> None:
    from dicomflow.intake.models import ImportRun

    post_save.connect(reception_finished, sender=ImportRun, dispatch_uid="catalog-analyse-after-reception")
