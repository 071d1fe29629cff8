"""``dicomflow check PATH``: completeness, validity, consistency and RT QC of every series.

``--json`` prints ``{"series": [{"uid", "modality", "complete", "missing_slices", "findings":
[{"severity", "code", "message"}], ...}]}``. ``complete`` is null for series that are not image
stacks; ``missing_slices`` are positions in mm along the slice normal. Exit status is 0 whenever
the check ran, whatever it found (findings are data, not failures); non-zero only when it could
not run (e.g. PATH missing). With ``--expected-sex``/``--expected-birth-date``/
``--expected-birth-year`` a ``sanity`` result (MATCHES / CONFLICT / INCONSISTENT) is added.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail


def register(app: typer.Typer) -> None:
    app.command(
        "check",
        help="Check every series under PATH (headers only) and list the findings. "
        "Exit status 0 whenever the check ran, whatever it found; non-zero only if it could not run.",
    )(check_command)


def check_command(
    path: Path = typer.Argument(..., help="Folder or file with DICOM data."),
    expected_sex: str | None = typer.Option(None, "--expected-sex", help="Expected PatientSex (M/F/O)."),
    expected_birth_date: str | None = typer.Option(
        None, "--expected-birth-date", help="Expected PatientBirthDate (YYYYMMDD)."
    ),
    expected_birth_year: int | None = typer.Option(None, "--expected-birth-year", help="Expected birth year."),
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow.core.checks import ExpectedSubject, check_sanity, record_from_dataset, run_checks
    from dicomflow.core.rt import scan

    if not path.exists():
        fail(f"{path} does not exist; give a folder or file with DICOM data", as_json)
    result = scan(path, record_from_dataset)
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} file(s) that are not usable DICOM", err=True)
    reports = run_checks(result.records)
    document: dict = {"series": [r.as_dict() for r in reports]}
    if expected_sex or expected_birth_date or expected_birth_year is not None:
        expected = ExpectedSubject(expected_sex, expected_birth_date, expected_birth_year)
        document["sanity"] = check_sanity((r.patient for r in result.records), expected).as_dict()
    lines = []
    for r in reports:
        state = {True: "complete", False: "INCOMPLETE", None: "-"}[r.complete]
        lines.append(f"{r.modality:<9} {r.uid} {state}")
        lines.extend(f"    {f.severity.value:<7} {f.code.value}: {f.message}" for f in r.findings)
    if "sanity" in document:
        lines.append(f"sanity: {document['sanity']['status']}")
    emit(document, as_json, "\n".join(lines) or "no DICOM series found")
