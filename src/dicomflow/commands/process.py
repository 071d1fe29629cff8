"""``dicomflow process PATH --template NAME --project KEY --out DIR --json``: the whole chain for a folder.

Import → checks → rules (or the given template) → de-identify → process → verify → re-identify →
export to DIR, through the same services the Celery worker runs (in this process, stage by stage;
progress on stderr). Prints ``{"job", "status", "stages": [{"name", "status"}], "results": [paths]}``;
exits 1 with the reason on stderr when the job failed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django


def register(app: typer.Typer) -> None:
    app.command("process", help="Run the whole processing chain for a folder and export the results to DIR.")(process)


def process(
    path: Path = typer.Argument(..., help="Folder (or file / ZIP) with the series to process."),
    template: str = typer.Option(None, "--template", help="Template name; default: the rules choose."),
    project: str = typer.Option(..., "--project", help="Project key whose keys de-identify the data."),
    out: Path = typer.Option(None, "--out", help="Folder the re-identified results are exported to."),
    as_json: bool = JSON_OPTION,
) -> None:
    if not path.exists():
        fail(f"{path} does not exist", as_json)
    setup_django()
    from dicomflow.errors import DicomflowError
    from dicomflow.processing import selectors, services
    from dicomflow.processing.models import JobStatus, Stage

    try:
        services.ensure_builtin_templates()
        job = services.create_job(project_key=project, input_path=path, template_name=template, out_dir=out)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    stage = services.next_stage(job.pk)
    while stage:
        typer.echo(f"job {job.pk}: {Stage(stage).label}...", err=True)
        stage = services.run_stage(job.pk, stage)
    summary = selectors.job_summary(job.pk)
    document = {
        "job": summary["job"],
        "status": summary["status"],
        "stages": [{"name": s["name"], "status": s["status"]} for s in summary["stages"]],
        "results": summary["results"],
    }
    human = f"job {job.pk}: {summary['status']}" + "".join(f"\n  {p}" for p in summary["results"])
    emit(document, as_json, human)
    if summary["status"] != JobStatus.FINISHED:
        typer.echo(f"error: job {job.pk} {summary['status']}: {summary['error'] or 'waiting'}", err=True)
        raise typer.Exit(1)
