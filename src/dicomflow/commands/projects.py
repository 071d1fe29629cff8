"""Research project commands: ``dicomflow project create|list|status|add-member|remove-member`` and
``dicomflow stage``. They act as the command-line operator and are audited under ``cli:<OS login>``.

Projects share the file key store with ``dicomflow deid``: a project created here and
``dicomflow deid --project KEY`` use the same secret and options.
"""

from __future__ import annotations

import json

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django

project_app = typer.Typer(help="Research projects: create, list, members, pseudonymization status.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(project_app, name="project")
    app.command("stage", help="Stage series of a clinical study (with all they reference) into a project.")(stage)


@project_app.command("create", help="Create a project (and its secret key in the key store).")
def create(
    key: str = typer.Argument(..., help="Project key (letters, digits, '_', '.', '-')."),
    name: str = typer.Option("", "--name", help="Display name (default: the key)."),
    options: str = typer.Option(
        None, "--options", help='De-identification options as JSON, e.g. \'{"retain_patient_characteristics": true}\'.'
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    data = None
    if options:
        try:
            data = json.loads(options)
        except json.JSONDecodeError as exc:
            fail(f"--options is not valid JSON ({exc.msg} at character {exc.pos})", as_json)
    setup_django()
    from dicomflow.errors import DicomflowError
    from dicomflow.projects.services import create_project

    try:
        project = create_project(key, name or key, data)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = {"key": project.key, "name": project.name, "options": project.deid_options().to_dict()}
    emit(doc, as_json, f"project {project.key} created")


@project_app.command("list", help="List projects.")
def list_projects(as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.projects.selectors import project_summaries

    rows = project_summaries()
    human = "\n".join(f"{r['key']}\t{r['name']}\t{r['subjects']} subjects\t{r['studies']} studies" for r in rows)
    emit({"projects": rows}, as_json, human or "no projects")


@project_app.command("status", help="Pseudonymization of a clinical study per project (none/partly/fully).")
def status(
    study_uid: str = typer.Argument(..., help="Study Instance UID of a clinical study."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.catalog.models import Study
    from dicomflow.projects.selectors import study_pseudonymization

    study = Study.objects.filter(study_instance_uid=study_uid, project__isnull=True).first()
    if study is None:
        fail("no clinical study with this Study Instance UID in the catalog", as_json)
    rows = study_pseudonymization(study)
    human = "\n".join(f"{r['project']}\t{r['status']}\t{r['series_staged']}/{r['series_total']} series" for r in rows)
    emit({"study": study_uid, "projects": rows}, as_json, human or "no projects")


ROLE_HELP = "viewer, uploader, data_manager, reidentifier or project_admin."


def _project_and_user(key: str, username: str, as_json: bool):
    from dicomflow.accounts.services import get_user
    from dicomflow.errors import DicomflowError
    from dicomflow.projects.models import Project

    project = Project.objects.filter(key=key).first()
    if project is None:
        fail(f"no project with key '{key}'; create it with 'dicomflow project create'", as_json)
    try:
        return project, get_user(username)
    except DicomflowError as exc:
        fail(str(exc), as_json)


@project_app.command("add-member", help="Give a user a role in a project (or change their role).")
def add_member(
    key: str = typer.Argument(..., help="Project key."),
    user: str = typer.Argument(..., help="User name."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.projects import services

    project, member_user = _project_and_user(key, user, as_json)
    try:
        member = services.add_member(cli_operator(), project, member_user, role)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit({"project": project.key, "user": member_user.username, "role": member.role}, as_json,
         f"{member_user.username} is {member.get_role_display().lower()} of {project.key}")


@project_app.command("remove-member", help="Take a user out of a project.")
def remove_member(
    key: str = typer.Argument(..., help="Project key."),
    user: str = typer.Argument(..., help="User name."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.projects import services

    project, member_user = _project_and_user(key, user, as_json)
    try:
        services.remove_member(cli_operator(), project, member_user)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit({"project": project.key, "user": member_user.username, "role": None}, as_json,
         f"{member_user.username} removed from {project.key}")


def stage(
    study_uid: str = typer.Argument(..., help="Study Instance UID of a clinical study."),
    project: str = typer.Option(..., "--project", help="Project key."),
    series: list[str] = typer.Option(None, "--series", help="Series UID to stage (repeat; default: every series)."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.catalog.models import Study
    from dicomflow.errors import DicomflowError
    from dicomflow.projects.models import Project, StagingStatus
    from dicomflow.projects.services import stage_series

    target = Project.objects.filter(key=project).first()
    if target is None:
        fail(f"no project with key '{project}'; create it with 'dicomflow project create'", as_json)
    study = Study.objects.filter(study_instance_uid=study_uid, project__isnull=True).first()
    if study is None:
        fail("no clinical study with this Study Instance UID in the catalog", as_json)
    try:
        job = stage_series(cli_operator(), target, study, series or None, run_inline=True)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = job.as_dict()
    human = (
        f"staging job {job.pk}: {job.status}; {len(job.selected_series)} series, files in {job.files_in}, "
        f"out {job.files_out}, new {job.instances_new}, duplicate {job.instances_duplicate}, "
        f"quarantined {len(job.quarantined)}" + (f"; error: {job.error}" if job.error else "")
    )
    emit(doc, as_json, human)
    if job.status != StagingStatus.FINISHED:
        if job.error:
            typer.echo(f"error: {job.error}", err=True)
        raise typer.Exit(1)
