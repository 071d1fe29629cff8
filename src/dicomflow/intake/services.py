"""The import service of files, folders and archives: CLI, uploads, watched folders, staging.

Files are read and stored by worker processes (header only, pixel bytes copied through) and
catalogued by this process in batches. Every file seen is counted exactly once: new, duplicate,
conflict or ignored (with a specific reason). Each import is one ``ImportSession``
(``intake.sessions``), as is each association of the C-STORE receiver.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from django.conf import settings
from django.db import connections

from dicomflow.core.archive import ArchiveLimits
from dicomflow.core.ingest import IgnoredFile, Ingestion, StoredFile
from dicomflow.core.store import FileStore
from dicomflow.errors import InputError
from dicomflow.intake.models import SourceKind
from dicomflow.intake.sessions import ImportReport, ImportSession

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]


def file_store() -> FileStore:
    return FileStore(settings.STORE_DIR, settings.DICOMFLOW_FSYNC)


def worker_count(requested: int | None = None) -> int:
    count = requested or settings.DICOMFLOW_IMPORT_WORKERS
    if multiprocessing.current_process().daemon:
        return 1  # e.g. inside a Celery prefork child: daemons may not fork; Celery spreads tasks instead
    return max(1, count)


def start_ingestion(paths, workers: int | None = None, limits: ArchiveLimits | None = None) -> Ingestion:
    """Start reading and storing files now (see ``Ingestion``); catalogue them with ``import_paths``."""
    from dicomflow.intake.diskcap import store_capacity

    count = worker_count(workers)
    capacity = store_capacity()  # the disk cap: reads the catalogue, so before the fork closes connections
    if count > 1:
        connections.close_all()  # forked workers must not inherit open database handles
    return Ingestion(paths, settings.WORK_DIR, limits or settings.ARCHIVE_LIMITS, file_store(), count,
                     capacity=capacity)


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
    intake_filter=None,
) -> ImportReport:
    """Import files, folders and archives (also archives found inside folders) into the catalog.

    ``project`` (a research project) files the rows as that project's de-identified copy (staging).
    The import runs as one :class:`ImportSession`, which signals ``import_finished`` once at the end;
    with ``analyse`` its listeners queue the touched studies for analysis (RT edges, checks) on commit.
    ``ingestion``: one already started for these paths (the CLI starts it before Django).
    ``intake_filter``: the source's :class:`~dicomflow.core.intake_filter.IntakeFilter` (watched folders).
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            if ingestion is not None:
                ingestion.close()
            raise InputError(f"no such file or folder: {p}")
    session = ImportSession(
        file_store(), source_kind=source_kind, source=received_from or ", ".join(map(str, paths)),
        received_from=received_from, project=project, analyse=analyse, intake_filter=intake_filter,
    )
    session.open()
    inputs = ingestion or start_ingestion(paths, workers, limits)
    batch: list[StoredFile] = []
    batch_size = settings.DICOMFLOW_IMPORT_BATCH
    done = 0

    def handle(result: StoredFile | IgnoredFile) -> None:
        nonlocal done
        done += 1
        if isinstance(result, IgnoredFile):
            session.ignore(result.display_name, result.reason)
        else:
            batch.append(result)
            if len(batch) >= batch_size:
                session.record(batch)
                batch.clear()
        if progress:
            progress(done, None)

    try:
        for result in inputs:
            handle(result)
        session.record(batch)
    finally:
        inputs.close()
    for refused in inputs.refused:
        session.ignore(refused.display_name, refused.reason)
    session.report.files_seen = inputs.seen
    report = session.finish()  # sends import_finished: analysis (if ``analyse``) and rules follow
    from dicomflow.intake.diskcap import alarm

    alarm(getattr(inputs, "capacity", None), report, source_kind)
    log.info(
        "import %s: %d files, %d new, %d duplicate, %d conflicts, %d ignored",
        report.import_run_id,
        report.files_seen,
        report.instances_new,
        report.instances_duplicate,
        len(report.conflicts),
        len(report.ignored),
    )
    return report
