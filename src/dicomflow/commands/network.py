"""DICOM network commands: the receiver (``scp``), the sender (``send``) and ``echo``."""

from __future__ import annotations

import logging
import sys

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django


def register(app: typer.Typer) -> None:
    app.command(
        "scp",
        short_help="Run the C-STORE/C-ECHO receiver in the foreground.",
        help=(
            "Run the C-STORE/C-ECHO receiver in the foreground (Ctrl-C or SIGTERM stops it cleanly). "
            "The called AE title must be TITLE. --allow AET@HOST (repeatable; AET or HOST may be '*', "
            "HOST may be an IP, a CIDR network or a host name) lists who may send; without it only "
            "loopback peers are accepted. Others are rejected at association time."
        ),
    )(scp_command)
    app.command("send", help="C-STORE a catalogued series or study to a DICOM node, files unchanged.")(send_command)
    app.command("echo", help="C-ECHO a DICOM node (AET@HOST:PORT) to check it answers and accepts us.")(echo_command)


def _log_to_stderr() -> None:
    """The CLI's own log lines (receiver status) go to stderr; stdout stays for results."""
    logger = logging.getLogger("dicomflow")
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def scp_command(
    port: int = typer.Option(None, "--port", help="TCP port (default: DICOMFLOW_SCP_PORT, 11112)."),
    aet: str = typer.Option(None, "--aet", help="Our AE title (default: DICOMFLOW_SCP_AET, DICOMFLOW)."),
    allow: list[str] = typer.Option(
        None, "--allow", help="AET@HOST allowed to associate (repeatable). Default: DICOMFLOW_SCP_ALLOW."
    ),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    grace: float = typer.Option(10.0, help="Seconds running associations get to finish on shutdown."),
    as_json: bool = JSON_OPTION,
) -> None:
    """With --json, one document summarising the run is printed when the receiver stops."""
    setup_django()
    _log_to_stderr()
    from dicomflow.errors import DicomflowError
    from dicomflow.intake.network.scp import run_scp

    try:
        summary = run_scp(aet, port, allow or None, host=host, grace=grace)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit(
        summary,
        as_json,
        f"receiver {summary['aet']} stopped: {summary['files']} files in {summary['associations']} associations, "
        f"{summary['new']} new, {summary['duplicate']} duplicate, {summary['conflicts']} conflicts, "
        f"{summary['refused']} refused",
    )


def _node(to: str, our_aet: str | None):
    """``AET@HOST:PORT`` or the name of a configured DicomNode."""
    from dicomflow.intake.network.common import parse_node
    from dicomflow.intake.network.scu import as_remote_node

    if "@" in to:
        return parse_node(to, our_aet or "DICOMFLOW")
    from dicomflow.errors import InputError
    from dicomflow.intake.models import DicomNode

    node = DicomNode.objects.filter(name=to, enabled=True).first()
    if node is None:
        raise InputError(f"no enabled DICOM node named {to!r}; give AET@HOST:PORT or configure the node")
    return as_remote_node(node, our_aet)


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
    from dicomflow.intake.network.scu import send_series, send_study

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
    from dicomflow.intake.network.scu import echo

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
