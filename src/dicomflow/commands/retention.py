"""``dicomflow retention run [--dry-run] --json``: delete working copies older than the retention policy."""

from __future__ import annotations

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Retention of working copies (datastore copies, job folders, uploads, exports).",
                        no_args_is_help=True)
    group.command("run", help="Delete working copies older than DICOMFLOW_RETAIN_*_DAYS; --dry-run only lists "
                              "them.")(run_command)
    app.add_typer(group, name="retention")


def run_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """``{"dry_run", "policy": {kind: days}, "deleted": [{"kind", "path", "bytes", "age_days", "ref"}],
    "freed_bytes", "errors": [{"kind", "path", "reason"}]}``; exit 1 when something could not be deleted."""
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.processing.retention import run_retention

    try:
        report = run_retention(cli_operator(), dry_run=dry_run)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = report.as_dict()
    verb = "would delete" if dry_run else "deleted"
    emit(doc, as_json, f"{verb} {len(doc['deleted'])} working copie(s), {doc['freed_bytes']} bytes; "
                       f"{len(doc['errors'])} error(s)")
    if doc["errors"]:
        raise typer.Exit(1)
