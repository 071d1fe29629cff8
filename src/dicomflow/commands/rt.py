"""``dicomflow rt ...``: the RT reference tree of a folder and the closure of a selection.

``dicomflow rt tree PATH --json`` prints ``{"series": [{"uid", "modality", "references",
"missing_references", "approval_status", ...}]}``; ``dicomflow rt select PATH SERIES_UID... --json``
prints ``{"selected": [series uids]}`` — the series and all they reference, transitively.
Headers only; files that are not DICOM are skipped (counted on stderr). Review date and reviewer
are not printed: who may see them is the catalog's decision.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail

rt_app = typer.Typer(help="RT relations: CT → RTSTRUCT → RTPLAN → RTDOSE/RTIMAGE.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(rt_app, name="rt")


def _graph(path: Path, as_json: bool):
    from dicomflow.core.rt import graph_from_path

    if not path.exists():
        fail(f"{path} does not exist; give a folder or file with DICOM data", as_json)
    graph, result = graph_from_path(path)
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} file(s) that are not usable DICOM", err=True)
    return graph


@rt_app.command("tree", help="Show every series under PATH with what it references and its approval.")
def tree_command(
    path: Path = typer.Argument(..., help="Folder or file with DICOM data."),
    as_json: bool = JSON_OPTION,
) -> None:
    document = _graph(path, as_json).tree()
    lines = []
    for s in document["series"]:
        line = f"{s['modality']:<9} {s['uid']}"
        if s["approval_status"]:
            line += f" [{s['approval_status']}]"
        for ref in s["references"]:
            line += f"\n          -> {ref}"
        for ref in s["missing_references"]:
            line += f"\n          -> {ref} (absent)"
        lines.append(line)
    emit(document, as_json, "\n".join(lines) or "no DICOM series found")


@rt_app.command("select", help="The given series and everything they reference, transitively.")
def select_command(
    path: Path = typer.Argument(..., help="Folder or file with DICOM data."),
    series_uids: list[str] = typer.Argument(..., help="Series Instance UID(s) to select."),
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow.errors import DicomflowError

    graph = _graph(path, as_json)
    try:
        selected = graph.closure(*series_uids)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit({"selected": selected}, as_json, "\n".join(selected))
