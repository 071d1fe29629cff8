"""``dicomflow process PATH --template NAME --project KEY --out DIR --json``: the whole chain for a folder.

Import → checks → rules (or the given template) → de-identify → process → verify → re-identify →
export to DIR, through the same services the Celery worker runs (in this process, stage by stage;
progress on stderr). Prints ``{"job", "status", "stages": [{"name", "status"}], "results": [paths]}``;
exits 1 with the reason on stderr when the job failed, 3 when it waits for quality control
(``--require-qc``).

``dicomflow jobs show|log|retry|cancel|approve|reject|override JOB`` look at and steer jobs, and
``dicomflow jobs send --project KEY --series UID`` sends catalogued series; sending, retry and
approve run the released stages in this process. Every action goes through the processing
services as the command-line operator (audited as ``cli:<login>``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django


def register(app: typer.Typer) -> None:
    app.command("process", help="Run the whole processing chain for a folder and export the results to DIR.")(process)
    register_jobs(app)


def process(
    path: Path = typer.Argument(..., help="Folder (or file / ZIP) with the series to process."),
    template: str = typer.Option(None, "--template", help="Template name; default: the rules choose."),
    project: str = typer.Option(..., "--project", help="Project key whose keys de-identify the data."),
    out: Path = typer.Option(None, "--out", help="Folder the re-identified results are exported to."),
    require_qc: bool = typer.Option(False, "--require-qc", help="Stop before export until 'dicomflow jobs approve'."),
    as_json: bool = JSON_OPTION,
) -> None:
    if not path.exists():
        fail(f"{path} does not exist", as_json)
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.processing import selectors, services
    from dicomflow.processing.models import JobStatus, Stage

    def announce(job_id: int, stage: str) -> None:
        typer.echo(f"job {job_id}: {Stage(stage).label}...", err=True)

    try:
        services.ensure_builtin_templates()
        job = services.process_folder(cli_operator(), project_key=project, path=path, template_name=template,
                                      out_dir=out, require_qc=require_qc, inline=True, on_stage=announce)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    summary = selectors.job_summary(job.pk)
    document = {
        "job": summary["job"],
        "status": summary["status"],
        "stages": [{"name": s["name"], "status": s["status"]} for s in summary["stages"]],
        "results": summary["results"],
    }
    human = f"job {job.pk}: {summary['status']}" + "".join(f"\n  {p}" for p in summary["results"])
    emit(document, as_json, human)
    if summary["status"] == JobStatus.WAITING:
        typer.echo(f"job {job.pk} waits for quality control: 'dicomflow jobs approve {job.pk}' or 'reject'", err=True)
        raise typer.Exit(3)
    if summary["status"] != JobStatus.FINISHED:
        typer.echo(f"error: job {job.pk} {summary['status']}: {summary['error']}", err=True)
        raise typer.Exit(1)


# --- dicomflow jobs ...: look at and steer processing jobs -------------------------------------------
jobs_app = typer.Typer(help="Processing jobs: show, log, retry, cancel, quality control.", no_args_is_help=True)


def register_jobs(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@jobs_app.command("show", help="A job's status, stages, results and error.")
def jobs_show(job_id: int = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import selectors
    from dicomflow.processing.models import Job

    try:
        summary = selectors.job_summary(job_id)
    except Job.DoesNotExist:
        fail(f"no job #{job_id}", as_json)
    stages = "\n".join(f"  {s['name']}: {s['status']}" + (f" ({s['error']})" if s["error"] else "")
                       for s in summary["stages"])
    emit(summary, as_json, f"job {job_id}: {summary['status']}\n{stages}")


@jobs_app.command("log", help="A job's processing log (filter by level or stage).")
def jobs_log(job_id: int = typer.Argument(...), level: str = typer.Option(None, "--level"),
             stage: str = typer.Option(None, "--stage"), as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import selectors

    entries = [{"time": e.time.isoformat(), "level": e.level, "stage": e.stage, "message": e.message}
               for e in selectors.log_entries(job_id=job_id, level=level, stage=stage)]
    emit({"entries": entries}, as_json,
         "\n".join(f"{e['time']} {e['level']:7} {e['stage'] or '-':15} {e['message']}" for e in entries))


def _steer(job_id: int, as_json: bool, action) -> None:
    """Call ``action(operator)`` (a processing service) and print the job's summary."""
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.processing import selectors
    from dicomflow.processing.models import JobStatus

    try:
        action(cli_operator())
    except DicomflowError as exc:
        fail(str(exc), as_json)
    summary = selectors.job_summary(job_id)
    emit(summary, as_json, f"job {job_id}: {summary['status']}")
    if summary["status"] == JobStatus.FAILED:
        typer.echo(f"error: job {job_id} failed: {summary['error']}", err=True)
        raise typer.Exit(1)


@jobs_app.command("retry", help="Retry the failed stage of a job and run the rest here.")
def jobs_retry(job_id: int = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import services

    _steer(job_id, as_json, lambda op: services.retry_job(op, job_id, inline=True))


@jobs_app.command("cancel", help="Cancel a job (after its running stage, if one runs).")
def jobs_cancel(job_id: int = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import services

    _steer(job_id, as_json, lambda op: services.cancel_job(op, job_id))


@jobs_app.command("approve", help="Quality control: approve the result and export it.")
def jobs_approve(job_id: int = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import services

    _steer(job_id, as_json, lambda op: services.approve_qc(op, job_id, inline=True))


@jobs_app.command("reject", help="Quality control: reject the result with a reason (the job fails).")
def jobs_reject(job_id: int = typer.Argument(...), reason: str = typer.Option(..., "--reason", help="Why."),
                as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import services

    _steer(job_id, as_json, lambda op: services.reject_qc(op, job_id, reason))


@jobs_app.command("override", help="Let a blocking check finding pass for a job (then retry it).")
def jobs_override(job_id: int = typer.Argument(...), code: str = typer.Argument(..., help="Finding code."),
                  reason: str = typer.Option(..., "--reason", help="Why the finding may pass."),
                  as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.processing import services

    _steer(job_id, as_json, lambda op: services.override_blocking_finding(op, job_id, code, reason))


@jobs_app.command("send", help="Send catalogued series (or a study's) for processing and run the jobs here.")
def jobs_send(
    project: str = typer.Option(..., "--project", help="Project key whose keys de-identify the data."),
    series: list[str] = typer.Option(None, "--series", help="Series Instance UID (repeatable)."),
    study: str = typer.Option(None, "--study", help="Study Instance UID: every series of it that fits."),
    template: str = typer.Option(None, "--template", help="Template name; default: the rules' choice."),
    require_qc: bool = typer.Option(False, "--require-qc", help="Stop before export until 'dicomflow jobs approve'."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.processing import selectors, services
    from dicomflow.processing.models import JobStatus

    try:
        jobs = services.send_for_processing(cli_operator(), project_key=project, series_uids=series or None,
                                            study_uid=study, template_name=template, require_qc=require_qc,
                                            inline=True)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    summaries = [selectors.job_summary(job.pk) for job in jobs]
    emit({"jobs": summaries}, as_json, "\n".join(f"job {s['job']}: {s['status']}" for s in summaries))
    if any(s["status"] == JobStatus.FAILED for s in summaries):
        raise typer.Exit(1)
