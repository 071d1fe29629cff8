"""``dicomflow rules ...``: see which template rules would choose, without changing anything.

``dicomflow rules dry-run PATH [--rules FILE.json] --json`` prints
``{"series": [{"uid", "status", "template", "explanation"}]}``; files that are not DICOM are
listed on stderr.
Values of identifying attributes (PS3.15 set, Patient module, person names) are masked in the
explanation as ``***``; the web UI shows them unmasked to users allowed to see the series.
Nothing is written: no catalog, no database, no files.

``dicomflow rules defaults --json`` prints the built-in rules document
``{"rulesets": [...], "templates": [...]}``: a starting point to edit and pass back with ``--rules``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail

rules_app = typer.Typer(help="Rules that choose a processing template for each series.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")


@rules_app.command("dry-run", help="Evaluate rules on every series under PATH and explain each decision.")
def dry_run_command(
    path: Path = typer.Argument(..., help="Folder or file with DICOM series."),
    rules: Path | None = typer.Option(
        None, "--rules", help="JSON rules file (list of rulesets or {rulesets, templates}); default: built-in."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow.core.rules import builtin_templates, default_rulesets, dry_run, load_rules_file
    from dicomflow.errors import DicomflowError

    try:
        if rules is not None:
            rulesets, templates = load_rules_file(rules)
        else:
            rulesets, templates = default_rulesets(), builtin_templates()
        report = dry_run(path, rulesets, templates)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    for skipped, reason in report.skipped:
        typer.echo(f"skipped {skipped}: {reason}", err=True)
    document = {"series": [e.to_dict(mask_identifying=True) for e in report.evaluations]}
    lines = [f"{e.series_uid}: {e.status.value} ({e.summary})" for e in report.evaluations]
    emit(document, as_json, "\n".join(lines) or "no DICOM series found")


@rules_app.command("defaults", help="Print the built-in rulesets and templates (a rules file to start from).")
def defaults_command(as_json: bool = JSON_OPTION) -> None:
    from dicomflow.core.rules import builtin_templates, default_rulesets

    document = {
        "rulesets": [r.to_dict() for r in default_rulesets()],
        "templates": [t.to_dict() for t in builtin_templates().values()],
    }
    emit(document, as_json)
