"""``import_finished``: sent once per import session, whatever its source, with what it touched.

Every import — the command line, uploads, watched folders, staging and each C-STORE association —
runs as one :class:`dicomflow.intake.sessions.ImportSession`, whose ``finish()`` sends this signal
exactly once. Follow-up work listens here instead of watching import records being saved:
the catalog queues the analysis (RT edges, checks) of the touched studies; processing evaluates
the rules on new series. The signal is defined in the catalog (the lowest layer that knows the
touched rows) so that intake sends it and processing hears it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.dispatch import Signal

# Sent with ``imported=FinishedImport(...)``, sender = the ImportSession class.
import_finished = Signal()


@dataclass(frozen=True)
class FinishedImport:
    """What one finished import touched (primary keys and counts only: nothing identifying)."""

    import_run_id: int | None
    source_kind: str
    files_seen: int
    instances_new: int
    patient_ids: frozenset[int]
    study_ids: frozenset[int]
    series_ids: frozenset[int]
    analyse: bool = True  # queue the analysis of the touched studies (off when the caller runs it itself)


def analyse_after_import(sender, imported: FinishedImport, **kwargs) -> None:
    """Queue the analysis of the studies the import touched, once its transaction commits."""
    if imported.analyse and imported.study_ids:
        from dicomflow.catalog.tasks import enqueue_analysis

        enqueue_analysis(imported.study_ids)


def connect() -> None:
    import_finished.connect(analyse_after_import, dispatch_uid="catalog-analyse-after-import")
