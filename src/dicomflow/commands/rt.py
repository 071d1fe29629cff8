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


@rt_app.command("compare", help="Compare two RT Structure Sets ROI by ROI: Dice, Jaccard, HD95, MSD, surface Dice, APL.")
def compare_command(
    a: Path = typer.Argument(..., help="The structure set tested (e.g. the automatic result)."),
    b: Path = typer.Argument(..., help="The reference structure set (e.g. the clinician's edited one)."),
    images: Path | None = typer.Option(None, "--images", help="Folder with the image series both were drawn on "
                                       "(default: a grid built from the contours)."),
    tolerance: float = typer.Option(2.0, "--tolerance", min=0.0, help="Surface Dice tolerance, mm."),
    resolution: float = typer.Option(1.0, "--resolution", min=0.1, max=10.0,
                                     help="In-plane grid spacing (mm) when no images are given."),
    as_json: bool = JSON_OPTION,
) -> None:
    from dicomflow.core.quality.compare import compare_structure_sets, read_structure_set
    from dicomflow.errors import DicomflowError

    for path in (a, b):
        if not path.is_file():
            fail(f"{path} is not a file; give two RT Structure Set files", as_json)
    image_paths = None
    if images is not None:
        if not images.is_dir():
            fail(f"{images} is not a folder of images", as_json)
        image_paths = sorted(p for p in images.rglob("*") if p.is_file())
    try:
        document = compare_structure_sets(read_structure_set(a), read_structure_set(b), image_paths,
                                          tolerance_mm=tolerance, resolution_mm=resolution)
    except DicomflowError as exc:
        fail(str(exc), as_json)

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"{'ROI':<20} {'Dice':>6} {'Jaccard':>7} {'HD95':>7} {'MSD':>6} {'sDice':>6} {'APL':>8}"]
    for roi in document["rois"]:
        lines.append(f"{roi['name'][:20]:<20} {number(roi['dice']):>6} {number(roi['jaccard']):>7} "
                     f"{number(roi['hd95_mm'], 1):>7} {number(roi['msd_mm'], 1):>6} {number(roi['surface_dice']):>6} "
                     f"{number(roi['apl_mm'], 0):>8}")
    for side, key in (("A", "only_in_a"), ("B", "only_in_b")):
        if document[key]:
            lines.append(f"only in {side}: {', '.join(document[key])}")
    emit(document, as_json, "\n".join(lines))
