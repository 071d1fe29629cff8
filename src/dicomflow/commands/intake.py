"""Intake commands: import files/folders/ZIPs, catalog statistics."""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, setup_django


def register(app: typer.Typer) -> None:
    app.command("import", help="Import files, folders and ZIPs into the catalog.")(import_command)
    app.command("stats", help="Counts of the catalog.")(stats_command)


def import_command(
    paths: list[Path] = typer.Argument(..., help="Files, folders or archives (ZIP/TAR)."),
    as_json: bool = JSON_OPTION,
    workers: int = typer.Option(0, help="Worker processes (default: one per core)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    analyse_now: bool = typer.Option(
        False, "--analyse", help="Analyse the imported studies now (RT tree, checks) instead of queueing it for the worker."
    ),
) -> None:
    from dicomflow.commands.importing import import_files

    import_files(paths, as_json=as_json, workers=workers, quiet=quiet, analyse_now=analyse_now)


def stats_command(as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.catalog.selectors import catalog_counts

    counts = catalog_counts()
    emit(counts, as_json, ", ".join(f"{v} {k}" for k, v in counts.items()))
