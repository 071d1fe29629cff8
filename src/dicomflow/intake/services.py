"""The one import service every source uses: CLI, uploads, watched folders, C-STORE.

Files are read and stored by worker processes (header only, pixel bytes copied through) and
catalogued by this process in batches. Every file seen is counted exactly once: new, duplicate,
conflict or ignored (with a specific reason).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils import timezone

from dicomflow.catalog.services import CatalogWriter
from dicomflow.core.archive import ArchiveLimits, InputFile, RefusedInput, iter_input_files
from dicomflow.core.ingest import IgnoredFile, StoredFile, ingest_file
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


# --- worker side (no database) -------------------------------------------------------------------
_worker_store: FileStore | None = None


def _init_worker(store_root: str, fsync: str) -> None:
    global _worker_store
    _worker_store = FileStore(store_root, fsync)


def _work(item: tuple[str, str]) -> StoredFile | IgnoredFile:
    path, display = item
    assert _worker_store is not None
    return ingest_file(path, display, _worker_store)


# --- orchestration ---------------------------------------------------------------------------------
def _worker_count(requested: int | None) -> int:
    count = requested or settings.DICOMFLOW_IMPORT_WORKERS
    if multiprocessing.current_process().daemon:
        return 1  # e.g. inside a Celery prefork child: daemons may not fork; Celery spreads tasks instead
    return max(1, count)


class _Inputs:
    """Splits the walk into files to ingest and refused inputs, counting as it goes."""

    def __init__(self, paths: Iterable[str | os.PathLike], work_dir: Path, limits: ArchiveLimits):
        self._source = iter_input_files([Path(p) for p in paths], work_dir, limits)
        self.refused: list[RefusedInput] = []
        self.seen = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for entry in self._source:
            self.seen += 1
            if isinstance(entry, RefusedInput):
                self.refused.append(entry)
                continue
            assert isinstance(entry, InputFile)
            yield (str(entry.path), entry.display_name)


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
) -> ImportReport:
    """Import files, folders and archives (also archives found inside folders) into the catalog.

    ``project`` (a research project) files the rows as that project's de-identified copy (staging).
    With ``analyse`` the touched studies are queued for analysis (RT edges, checks) on commit.
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            from dicomflow.errors import InputError

            raise InputError(f"no such file or folder: {p}")
    store = file_store()
    report = ImportReport()
    run = ImportRun.objects.create(
        source_kind=source_kind, source=(received_from or ", ".join(map(str, paths)))[:1024]
    )
    report.import_run_id = run.id
    writer = CatalogWriter(store, received_from or f"{source_kind}", project=project)
    work_dir = settings.WORK_DIR / f"import-{uuid.uuid4().hex}"
    work_dir.mkdir(parents=True)
    inputs = _Inputs(paths, work_dir, limits or ArchiveLimits.from_env())
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

    n_workers = _worker_count(workers)
    try:
        if n_workers == 1:
            for path, display in inputs:
                handle(ingest_file(path, display, store))
        else:
            connections.close_all()  # children must not inherit open database handles
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(n_workers, initializer=_init_worker, initargs=(str(store.root), store.fsync)) as pool:
                for result in pool.imap_unordered(_work, inputs, chunksize=8):
                    handle(result)
        flush()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
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
