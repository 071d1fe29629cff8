"""De-identification commands: ``dicomflow deid`` and ``dicomflow reidentify``.

They work on folders without the catalog and never start Django: the project key, options and
reverse map live in the file key store under ``$DICOMFLOW_HOME/keys/projects/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail


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
    from dicomflow.core.deid import KeyStore, Options, ReverseMap, deidentify_folder, write_record
    from dicomflow.errors import DicomflowError, InputError

    if not src.exists():
        fail(f"{src} does not exist", as_json)
    try:
        store = KeyStore()
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
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow.core.deid import KeyStore, ReverseMap, reidentify_files
    from dicomflow.core.deid.job import iter_files
    from dicomflow.errors import DicomflowError

    try:
        store = KeyStore()
        store.project_key(project, create=False)
        rmap = ReverseMap.from_records(store.load_reverse_records(project))
    except DicomflowError as exc:
        fail(str(exc), as_json)
    files = iter_files(src)
    outcome = reidentify_files(files, dst, rmap)  # every file on its own; bad ones reported
    failed, written = outcome.failed, outcome.files_out
    doc = {"files_in": len(files), "files_out": written, "failed": failed}
    if failed and not written:
        doc["error"] = f"nothing was re-identified with project '{project}': {failed[0]['reason']}"
    emit(doc, as_json, f"files in {len(files)}, re-identified {written}, failed {len(failed)}")
    if failed:
        raise typer.Exit(1)
