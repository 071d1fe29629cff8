"""The DICOM receiver command (``scp``); the sender's ``send`` and ``echo`` are in ``commands.export``."""

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
            "loopback peers are accepted. Others are rejected at association time. It also answers "
            "Query/Retrieve (C-FIND, C-GET, C-MOVE) over the catalog for DICOM nodes bound to an account "
            "(admin: DICOM nodes → Q/R peer account), within what that account may see."
        ),
    )(scp_command)


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
    from dicomflow.projects.qr_scp import QueryRetrieveSCP

    try:
        summary = run_scp(aet, port, allow or None, host=host, grace=grace, query_retrieve=QueryRetrieveSCP())
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit(
        summary,
        as_json,
        f"receiver {summary['aet']} stopped: {summary['files']} files in {summary['associations']} associations, "
        f"{summary['new']} new, {summary['duplicate']} duplicate, {summary['conflicts']} conflicts, "
        f"{summary['refused']} refused",
    )
