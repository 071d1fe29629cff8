"""``dicomflow qr ...``: Query/Retrieve against a DICOM node (a clinical PACS).

``dicomflow qr find AET@HOST:PORT [--patient-id X] [--name N] [--date-from D] [--date-to D]
[--modality M] [--accession A] --json`` prints ``{"studies": [{"study_uid", "patient_id",
"study_date", "modalities", "description", "series_count", "in_catalog"}]}``;
``dicomflow qr series NODE --study UID --json`` the series of one study;
``dicomflow qr get NODE --study UID [--series UID ...] [--move] [--filter NAME] --json`` pulls into the
clinical pool and prints the import contract's counters (plus ``method``, ``retrieve``,
``import_runs``). NODE is ``AET@HOST:PORT`` or a configured node's name. The operator acts.
"""

from __future__ import annotations

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django

qr_app = typer.Typer(help="Query/Retrieve (C-FIND, C-GET, C-MOVE) against a DICOM node such as a clinical PACS.",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(qr_app, name="qr")


NODE_ARGUMENT = typer.Argument(..., help="AET@HOST:PORT, or the name of a configured DICOM node.")
AET_OPTION = typer.Option(None, "--aet", help="Calling AE title (default: the node's, or DICOMFLOW_SCP_AET).")


@qr_app.command("find", help="C-FIND studies on a DICOM node (study level; name wildcards * and ?).")
def find_command(
    node: str = NODE_ARGUMENT,
    patient_id: str = typer.Option("", "--patient-id", help="Patient ID (wildcards allowed)."),
    name: str = typer.Option("", "--name", help="Patient name, e.g. 'DOE^*'."),
    date_from: str = typer.Option("", "--date-from", help="First study date (YYYY-MM-DD)."),
    date_to: str = typer.Option("", "--date-to", help="Last study date (YYYY-MM-DD)."),
    modality: str = typer.Option("", "--modality", help="A modality in the study (CT, MR, RTSTRUCT...)."),
    accession: str = typer.Option("", "--accession", help="Accession number."),
    our_aet: str = AET_OPTION,
    timeout: float = typer.Option(30.0, help="Network/DIMSE timeout in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.export.qr import Query
    from dicomflow.projects import pacs

    query = Query(patient_id=patient_id, patient_name=name, date_from=date_from, date_to=date_to,
                  modality=modality, accession_number=accession)
    try:
        studies = pacs.find_studies(cli_operator(), node, query, allow_address=True, our_ae_title=our_aet,
                                    timeout=timeout)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    lines = [f"{s['study_uid']}  {s['study_date'] or '-':10}  {','.join(s['modalities']) or '-':12}  "
             f"{s['series_count']} series  {s['description']}" for s in studies]
    emit({"studies": studies}, as_json, "\n".join(lines + [f"{len(studies)} studies"]))


@qr_app.command("series", help="C-FIND the series of one study on a DICOM node.")
def series_command(
    node: str = NODE_ARGUMENT,
    study: str = typer.Option(..., "--study", help="Study Instance UID."),
    timeout: float = typer.Option(30.0, help="Network/DIMSE timeout in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.projects import pacs

    try:
        series = pacs.find_series(cli_operator(), node, study, allow_address=True, timeout=timeout)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit({"series": series}, as_json, "\n".join(
        f"{s['series_uid']}  {s['modality']:8}  {s['instances'] if s['instances'] is not None else '?'} instances  "
        f"{s['description']}" for s in series) or "no series")


@qr_app.command("get", help="Retrieve a study (or some series) from a DICOM node into the catalog: C-GET, or "
                            "C-MOVE to this installation's running receiver with --move.")
def get_command(
    node: str = NODE_ARGUMENT,
    study: str = typer.Option(..., "--study", help="Study Instance UID to retrieve."),
    series: list[str] = typer.Option(None, "--series", help="Series Instance UID (repeat; default: the whole study)."),
    move: bool = typer.Option(False, "--move", help="C-MOVE to the receiver (DICOMFLOW_SCP_AET) instead of C-GET."),
    destination: str = typer.Option(None, "--destination", help="Move destination AE title (default: DICOMFLOW_SCP_AET)."),
    filter_name: str = typer.Option(None, "--filter", help="Intake filter for a C-GET (default: the node's, or the "
                                                           "default filter). C-MOVE: the receiver's filter applies."),
    our_aet: str = AET_OPTION,
    timeout: float = typer.Option(300.0, help="Network/DIMSE timeout in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.errors import DicomflowError
    from dicomflow.projects import pacs

    try:
        doc = pacs.retrieve(cli_operator(), node, study, list(series or []), move=move, filter_name=filter_name,
                            allow_address=True, our_ae_title=our_aet, destination=destination, timeout=timeout)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    sub = doc["retrieve"]
    emit(doc, as_json, (f"{doc['method'].upper()}: {sub['completed']} sub-operations completed, {sub['failed']} "
                        f"failed; {doc['files_seen']} files, {doc['instances_new']} new, "
                        f"{doc['instances_duplicate']} duplicate, {len(doc['conflicts'])} conflicts, "
                        f"{len(doc['ignored'])} ignored"))
    if sub["failed"] or sub["status"] not in ("0x0000", "0xB000"):
        raise typer.Exit(1)
