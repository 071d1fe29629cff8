"""De-identification commands: ``dicomflow deid`` and ``dicomflow reidentify``.

``deid`` works on folders without the catalog and never starts Django: the project key, options and
reverse map live in the file key store under ``$DICOMFLOW_HOME/keys/projects/``. ``reidentify`` is
done by a named dicomflow user who is a Re-identifier of the project, and audited
(``dicomflow.deid.services``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django


def register(app: typer.Typer) -> None:
    app.command("deid", help="De-identify a folder with a project's persistent keys (PS3.15).")(deid)
    app.command("reidentify", help="Restore the original identity and UIDs of de-identified files.")(
        reidentify
    )


def deid(
    src: Path = typer.Argument(..., help="Folder (or file) to de-identify."),
    dst: Path = typer.Argument(..., help="Output folder: <study>/<series>/<instance>.dcm, new UIDs only."),
    project: str = typer.Option(..., "--project", help="Project key; created with default options on first use."),
    workers: int = typer.Option(0, "--workers", help="Processes (0 = one per core)."),
    options_json: str = typer.Option(
        None, "--options", help='Project options to change, as JSON (saved with the project), e.g. \'{"free_text": "allowlist"}\'.'
    ),
    record_dir: Path = typer.Option(
        None, "--record-dir", help="Where to write the de-identification record (default under $DICOMFLOW_HOME/work/deid)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow import settings  # the plain module: the key folder, without setting Django up
    from dicomflow.core.deid import KeyStore, Options, ReverseMap, deidentify_folder, write_record
    from dicomflow.errors import DicomflowError, InputError

    if not src.exists():
        fail(f"{src} does not exist", as_json)
    try:
        store = KeyStore(settings.PROJECT_KEYS_DIR)
        key = store.project_key(project, create=True)
        options = store.options(project)
        if options_json:
            import json

            try:
                changes = json.loads(options_json)
            except ValueError as exc:
                raise InputError(f"--options is not valid JSON ({exc.msg})") from exc
            if not isinstance(changes, dict):
                raise InputError("--options must be a JSON object")
            options = Options.from_dict({**options.to_dict(), **changes})
            store.save_options(project, options)
        started = time.monotonic()
        known = ReverseMap.from_records(store.load_reverse_records(project)).patients
        report = deidentify_folder(
            src, dst, key, options, workers=workers or None, progress=_progress if not as_json else None,
            known_patients=known,
        )
        if report.files_out:
            store.append_reverse_records(project, report.reverse_map.records())
        directory = record_dir or store.directory.parent.parent / "work" / "deid" / f"{project}-{time.strftime('%Y%m%dT%H%M%S')}"
        csv_path, _ = write_record(report, directory)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    elapsed = time.monotonic() - started
    rt = report.rt
    typer.echo(
        f"{report.files_out}/{report.files_in} files de-identified in {elapsed:.1f} s; "
        f"RT references: {rt.get('resolved', 0)}/{rt.get('references', 0)} resolved, "
        f"{len(rt.get('external', []))} external; record: {csv_path}",
        err=True,
    )
    human = (
        f"files in {report.files_in}, out {report.files_out}, failed {len(report.failed)}, "
        f"quarantined {len(report.quarantined)}, leak-scan findings {len(report.findings)}"
    )
    emit(report.contract(), as_json, human)
    if not report.ok:
        if report.findings:
            typer.echo("error: the leak scan found identifying values; those files were withheld", err=True)
        raise typer.Exit(1)


def _progress(done: int, total: int) -> None:
    if done == total or done % 100 == 0:
        sys.stderr.write(f"\r{done}/{total}")
        if done == total:
            sys.stderr.write("\n")


def reidentify(
    src: Path = typer.Argument(..., help="Folder (or file) of de-identified data or results."),
    dst: Path = typer.Argument(..., help="Output folder: <study>/<series>/<instance>.dcm."),
    project: str = typer.Option(..., "--project", help="Project key whose reverse map to use."),
    user: str = typer.Option(None, "--user", help="The dicomflow user acting (default: your OS login name); "
                                                  "they must be a Re-identifier of the project."),
    purpose: str = typer.Option("", "--purpose", help="Why (kept in the audit log; write no identities)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Re-identification is a named user's act: it needs the Re-identifier role and is audited
    (refusals too), like the same action on the web and the API."""
    setup_django()
    from dicomflow.accounts import audit
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.accounts.models import AuditAction
    from dicomflow.accounts.services import get_user
    from dicomflow.core.deid.job import iter_files
    from dicomflow.deid.services import reidentify_paths
    from dicomflow.errors import DicomflowError, NotFoundError
    from dicomflow.projects.models import Project

    operator = cli_operator()
    target = Project.objects.filter(key=project).first()
    if target is None:
        fail(f"no project with key '{project}' in the catalog; create it with 'dicomflow project create {project}'",
             as_json)
    name = user or operator.login
    try:
        actor = get_user(name)
    except NotFoundError:
        audit.denied(operator, AuditAction.REIDENTIFY, project=target, detail="re-identification asked for an unknown user")
        fail(f"no dicomflow user named '{name}'; give --user NAME of a Re-identifier of project '{project}'", as_json)
    if not src.exists():
        fail(f"{src} does not exist", as_json)
    files = iter_files(src)
    try:
        report = reidentify_paths(actor, target, [src], dst, purpose=purpose,
                                  what=f"{len(files)} file(s) via the command line ({operator})")
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = report.as_dict()
    if report.failed and not report.files_out:
        doc["error"] = f"nothing was re-identified with project '{project}': {report.failed[0]['reason']}"
    emit(doc, as_json, f"files in {report.files_in}, re-identified {report.files_out}, failed {len(report.failed)}")
    if report.failed:
        raise typer.Exit(1)
