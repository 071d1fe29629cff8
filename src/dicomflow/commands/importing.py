"""``dicomflow import`` itself, without typer: typer's command (``intake``) and the direct path for
plain command lines (``early``) both run :func:`import_files`.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from dicomflow.commands._common import emit, fail, setup_django


def import_files(paths: list[Path], *, as_json: bool, workers: int, quiet: bool, analyse_now: bool) -> None:
    """Import ``paths`` into the catalog and print the report (the CLI contract)."""
    for p in paths:
        if not p.exists():
            fail(f"no such file or folder: {p}", as_json)
    ingestion = _start_ingestion_before_django(paths, workers, as_json)
    try:
        # import_paths closes the ingestion when it is done; anything failing before it gets there
        # (Django's start-up, an unreachable database, Ctrl-C) must not leave the workers running
        # or an extracted archive in the work folder. close() may run twice: it is idempotent.
        setup_django()
        from dicomflow.errors import DicomflowError
        from dicomflow.intake.models import SourceKind
        from dicomflow.intake.services import import_paths

        with _progress_bar(show=not quiet and sys.stderr.isatty()) as progress:
            try:
                report = import_paths(
                    paths,
                    source_kind=SourceKind.CLI,
                    received_from="cli",
                    workers=workers or None,
                    progress=progress,
                    analyse=not analyse_now,  # queue it for the worker unless done here
                    ingestion=ingestion,
                )
                if analyse_now:
                    from dicomflow.catalog.analysis import analyse_studies

                    analyse_studies(report.study_ids)
            except DicomflowError as exc:
                fail(str(exc), as_json)
    finally:
        if ingestion is not None:  # None: a store cap is set, import_paths started its own (intake.diskcap)
            ingestion.close()
    doc = report.as_dict()
    human = (
        f"{doc['files_seen']} files: {doc['instances_new']} new, {doc['instances_duplicate']} duplicate, "
        f"{len(doc['conflicts'])} conflicts, {len(doc['ignored'])} ignored; "
        f"{doc['patients']} patients, {doc['studies']} studies, {doc['series']} series"
    )
    emit(doc, as_json, human)


@contextmanager
def _progress_bar(show: bool):
    """A progress callback drawing a bar on a terminal; None (and rich never imported) otherwise."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _start_ingestion_before_django(paths: list[Path], workers: int, as_json: bool):
    """Fork the workers and start reading files first: Django's start-up then overlaps real work.

    The workers need only the store's location (plain settings, no Django) and never touch the
    database; the catalog side joins once Django is ready. ``dicomflow`` may have started them
    already, before parsing the command line (``commands.early``).
    """
    from dicomflow.commands import early
    from dicomflow.errors import DicomflowError

    started = early.take(paths, workers)
    if started is not None:
        return started
    try:
        return early.start_ingestion(paths, workers)
    except DicomflowError as exc:
        fail(str(exc), as_json)


