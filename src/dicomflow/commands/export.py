"""Export commands: ``send`` (C-STORE a catalogued series or study to a DICOM node) and ``echo``."""

from __future__ import annotations

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django


def register(app: typer.Typer) -> None:
    app.command("send", help="C-STORE a catalogued series or study to a DICOM node, files unchanged.")(send_command)
    app.command("echo", help="C-ECHO a DICOM node (AET@HOST:PORT) to check it answers and accepts us.")(echo_command)


def _node(to: str, our_aet: str | None):
    """``AET@HOST:PORT`` or the name of a configured DicomNode."""
    from dicomflow.export.scu import as_remote_node
    from dicomflow.intake.network.common import parse_node

    if "@" in to:
        return parse_node(to, our_aet or "DICOMFLOW")
    from dicomflow.export.selectors import enabled_node

    return as_remote_node(enabled_node(to), our_aet)


def send_command(
    to: str = typer.Option(..., "--to", help="AET@HOST:PORT, or the name of a configured DICOM node."),
    series: str = typer.Option(None, "--series", help="Series Instance UID to send."),
    study: str = typer.Option(None, "--study", help="Study Instance UID to send."),
    our_aet: str = typer.Option(None, "--aet", help="Calling AE title (default: the node's, or DICOMFLOW)."),
    timeout: float = typer.Option(60.0, help="Network/DIMSE timeout in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    if bool(series) == bool(study):
        fail("give exactly one of --series UID or --study UID", as_json)
    setup_django()
    from dicomflow.errors import DicomflowError
    from dicomflow.export.scu import send_series, send_study

    try:
        node = _node(to, our_aet)
        if series:
            report = send_series(series, node, timeout=timeout)
        else:
            report = send_study(study, node, timeout=timeout)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = report.as_dict()
    emit(doc, as_json, f"{doc['sent']} of {doc['files']} files sent to {doc['node']}, {doc['failed']} failed")
    if report.failed:
        raise typer.Exit(1)


def echo_command(
    node: str = typer.Argument(..., help="AET@HOST:PORT, or the name of a configured DICOM node."),
    our_aet: str = typer.Option(None, "--aet", help="Calling AE title (default: DICOMFLOW)."),
    timeout: float = typer.Option(30.0, help="Timeout in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow.errors import DicomflowError
    from dicomflow.export.scu import echo

    try:
        if "@" in node:
            from dicomflow.intake.network.common import parse_node

            remote = parse_node(node, our_aet or "DICOMFLOW")
        else:
            setup_django()
            remote = _node(node, our_aet)
        status = echo(remote, timeout=timeout)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = {"node": str(remote), "status": f"0x{status:04X}", "ok": status == 0}
    emit(doc, as_json, f"C-ECHO {remote}: {'success' if status == 0 else doc['status']}")
    if status != 0:
        raise typer.Exit(1)
