"""One import session: the record, the catalogue writer and the tally of one import, any source.

``import_paths`` (command line, uploads, watched folders, staging) and the C-STORE receiver (one
session per association) both run their files through an :class:`ImportSession`: batches go to
the same :class:`~dicomflow.catalog.services.CatalogWriter`, counts into the same
:class:`ImportReport`, the same ImportRun row records them, and :meth:`ImportSession.finish`
sends ``dicomflow.catalog.signals.import_finished`` exactly once with what the session touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone

from dicomflow.catalog.services import CatalogWriter
from dicomflow.catalog.signals import FinishedImport, import_finished
from dicomflow.core.ingest import StoredFile
from dicomflow.core.store import FileStore
from dicomflow.intake.models import ImportRun

log = logging.getLogger(__name__)


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


class ImportSession:
    """One import from one source. Nothing touches the database until the first record or save.

    ``received_from`` is what instances record as their origin (default: the source kind);
    ``project`` files the rows as that research project's copy; ``analyse=False`` leaves the
    analysis of the touched studies to the caller (the signal says so to its listeners).
    ``intake_filter`` (:class:`dicomflow.core.intake_filter.IntakeFilter`, for watched folders, the
    receiver and Q/R pulls) drops instances outside its dates (ignored, with the rule as reason;
    a file this import put in the store is removed again) and marks or drops excluded series.
    """

    def __init__(self, store: FileStore, *, source_kind: str, source: str, received_from: str = "",
                 project=None, analyse: bool = True, intake_filter=None):
        self.store = store
        self.intake_filter = intake_filter
        self._series_verdicts: dict[str, str | None] = {}
        self.source_kind = source_kind
        self.source = source[:1024]
        self.analyse = analyse
        self.writer = CatalogWriter(store, received_from or source_kind, project=project)
        self.report = ImportReport()
        self.run: ImportRun | None = None
        self.finished = False

    def open(self) -> ImportRun:
        """The session's ImportRun row, created on first use."""
        if self.run is None:
            self.run = ImportRun.objects.create(source_kind=self.source_kind, source=self.source)
            self.report.import_run_id = self.run.id
        return self.run

    def record(self, batch: list[StoredFile]) -> None:
        """Catalogue stored files (new / duplicate / conflict) and count them.

        A batch the database refuses (a value it will not hold) is retried file by file, so one bad
        file never costs the others; a file refused on its own is ignored with the reason (its bytes
        stay in the store, where a later import of the same file adopts them). A lost connection is
        not the files' fault: it propagates.
        """
        self.open()
        if self.intake_filter is not None and batch:
            from dicomflow.intake.filters import apply_filter

            batch = apply_filter(self, batch)
        if not batch:
            return
        try:
            self._count(self.writer.record(batch), batch)
            return
        except (OperationalError, InterfaceError):
            self.writer.forget()
            raise
        except (DatabaseError, ValueError) as exc:  # psycopg refuses NUL with a ValueError
            self.writer.forget()
            if len(batch) == 1:
                self._refused(batch[0], exc)
                return
        for item in batch:
            try:
                self._count(self.writer.record([item]), [item])
            except (OperationalError, InterfaceError):
                self.writer.forget()
                raise
            except (DatabaseError, ValueError) as exc:
                self.writer.forget()
                self._refused(item, exc)

    def _refused(self, item: StoredFile, exc: Exception) -> None:
        log.warning(
            "import %s: the catalog refused one file (%s)", self.report.import_run_id, exc.__class__.__name__
        )
        self.ignore(item.display_name, f"could not be catalogued (the database refused a value: {exc.__class__.__name__})")

    def _count(self, outcome, batch: list[StoredFile]) -> None:
        report = self.report
        report.instances_new += len(outcome.new)
        report.instances_duplicate += len(outcome.duplicates)
        report.conflicts.extend({"path": i.display_name, "reason": reason} for i, reason in outcome.conflicts)
        report.patient_ids |= outcome.patient_ids
        report.study_ids |= outcome.study_ids
        report.series_ids |= outcome.series_ids
        if self.intake_filter is not None:
            from dicomflow.intake.filters import mark_excluded_series

            mark_excluded_series(self, batch)

    def ignore(self, display_name: str, reason: str) -> None:
        self.report.ignored.append({"path": display_name, "reason": reason})

    def save(self) -> None:
        """Write the counters so far (a long reception shows its progress)."""
        self._write(finished=False)

    def finish(self) -> ImportReport:
        """Close the record and send ``import_finished`` — once; later calls change nothing."""
        if not self.finished:
            self._write(finished=True)
            self.finished = True
            report = self.report
            import_finished.send(sender=ImportSession, imported=FinishedImport(
                import_run_id=report.import_run_id, source_kind=self.source_kind, files_seen=report.files_seen,
                instances_new=report.instances_new, patient_ids=frozenset(report.patient_ids),
                study_ids=frozenset(report.study_ids), series_ids=frozenset(report.series_ids),
                analyse=self.analyse,
            ))
        return self.report

    def _write(self, finished: bool) -> None:
        run, report = self.open(), self.report
        run.files_seen = report.files_seen
        run.instances_new = report.instances_new
        run.instances_duplicate = report.instances_duplicate
        run.conflicts = report.conflicts
        run.ignored = report.ignored
        fields = ["files_seen", "instances_new", "instances_duplicate", "conflicts", "ignored"]
        if finished:
            run.finished_at = timezone.now()
            fields.append("finished_at")
        run.save(update_fields=fields)
