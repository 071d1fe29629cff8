"""The one import service every source uses: CLI, uploads, watched folders, C-STORE.

Files are read and stored by worker processes (header only, pixel bytes copied through) and
catalogued by this process in batches. Every file seen is counted exactly once: new, duplicate,
conflict or ignored (with a specific reason).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils import timezone

from dicomflow.catalog.services import CatalogWriter
from dicomflow.core.archive import ArchiveLimits
from dicomflow.core.ingest import IgnoredFile, Ingestion, StoredFile
from dicomflow.errors import InputError
from dicomflow.core.store import FileStore
from dicomflow.intake.models import ImportRun, SourceKind

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]


@dataclass
class ImportReport:
    """The result of one import, shaped like the CLI contract."""

    files_seen: int = 0
    instances_new: int = 0
    instances_duplicate: int = 0
    conflicts: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)
    patient_ids: set[int] = field(default_factory=set)
    study_ids: set[int] = field(default_factory=set)
    series_ids: set[int] = field(default_factory=set)
    import_run_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "files_seen": self.files_seen,
            "instances_new": self.instances_new,
            "instances_duplicate": self.instances_duplicate,
            "conflicts": self.conflicts,
            "ignored": self.ignored,
            "patients": len(self.patient_ids),
            "studies": len(self.study_ids),
            "series": len(self.series_ids),
        }


def file_store() -> FileStore:
    return FileStore(settings.STORE_DIR, settings.DICOMFLOW_FSYNC)


def worker_count(requested: int | None = None) -> int:
    count = requested or settings.DICOMFLOW_IMPORT_WORKERS
    if multiprocessing.current_process().daemon:
        return 1  # e.g. inside a Celery prefork child: daemons may not fork; Celery spreads tasks instead
    return max(1, count)


def start_ingestion(paths, workers: int | None = None, limits: ArchiveLimits | None = None) -> Ingestion:
    """Start reading and storing files now (see ``Ingestion``); catalogue them with ``import_paths``."""
    count = worker_count(workers)
    if count > 1:
        connections.close_all()  # forked workers must not inherit open database handles
    return Ingestion(paths, settings.WORK_DIR, limits or ArchiveLimits.from_env(), file_store(), count)


def import_paths(
    paths: Iterable[str | os.PathLike],
    *,
    source_kind: str = SourceKind.CLI,
    received_from: str = "",
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    limits: ArchiveLimits | None = None,
    project=None,
    analyse: bool = True,
    ingestion: Ingestion | None = None,
) -> ImportReport:
    """Import files, folders and archives (also archives found inside folders) into the catalog.

    ``project`` (a research project) files the rows as that project's de-identified copy (staging).
    With ``analyse`` the touched studies are queued for analysis (RT edges, checks) on commit.
    ``ingestion``: one already started for these paths (the CLI starts it before Django).
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            if ingestion is not None:
                ingestion.close()
            raise InputError(f"no such file or folder: {p}")
    store = file_store()
    report = ImportReport()
    run = ImportRun.objects.create(
        source_kind=source_kind, source=(received_from or ", ".join(map(str, paths)))[:1024]
    )
    report.import_run_id = run.id
    writer = CatalogWriter(store, received_from or f"{source_kind}", project=project)
    inputs = ingestion or start_ingestion(paths, workers, limits)
    batch: list[StoredFile] = []
    batch_size = settings.DICOMFLOW_IMPORT_BATCH
    done = 0

    def flush() -> None:
        outcome = writer.record(batch)
        report.instances_new += len(outcome.new)
        report.instances_duplicate += len(outcome.duplicates)
        report.conflicts.extend({"path": i.display_name, "reason": reason} for i, reason in outcome.conflicts)
        report.patient_ids |= outcome.patient_ids
        report.study_ids |= outcome.study_ids
        report.series_ids |= outcome.series_ids
        batch.clear()

    def handle(result: StoredFile | IgnoredFile) -> None:
        nonlocal done
        done += 1
        if isinstance(result, IgnoredFile):
            report.ignored.append({"path": result.display_name, "reason": result.reason})
        else:
            batch.append(result)
            if len(batch) >= batch_size:
                flush()
        if progress:
            progress(done, None)

    try:
        for result in inputs:
            handle(result)
        flush()
    finally:
        inputs.close()
    report.ignored.extend({"path": r.display_name, "reason": r.reason} for r in inputs.refused)
    report.files_seen = inputs.seen
    run.files_seen = report.files_seen
    run.instances_new = report.instances_new
    run.instances_duplicate = report.instances_duplicate
    run.conflicts = report.conflicts
    run.ignored = report.ignored
    run.finished_at = timezone.now()
    run.save()
    log.info(
        "import %s: %d files, %d new, %d duplicate, %d conflicts, %d ignored",
        run.id,
        report.files_seen,
        report.instances_new,
        report.instances_duplicate,
        len(report.conflicts),
        len(report.ignored),
    )
    if analyse and report.study_ids:  # RT edges and checks of the touched studies, by a worker
        from dicomflow.catalog.tasks import enqueue_analysis

        enqueue_analysis(report.study_ids)
    return report
