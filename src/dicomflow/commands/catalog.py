"""``dicomflow catalog ...``: the stored analysis of the catalog (RT tree, selection, checks).

- ``catalog analyse [--all | STUDY_UID...]`` runs the analysis now (what the worker does after
  every import) and prints its summary;
- ``catalog tree STUDY_UID`` prints ``{"series": [...]}`` shaped like ``dicomflow rt tree``;
- ``catalog select SERIES_UID...`` prints ``{"selected": [...]}`` like ``dicomflow rt select``;
- ``catalog checks SERIES_UID...`` prints ``{"series": [...]}`` shaped like ``dicomflow check``.
Reads never touch the files. Review date and reviewer are not printed.
"""

from __future__ import annotations

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django

catalog_app = typer.Typer(help="The catalog's stored RT tree and check results.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")


@catalog_app.command("analyse", help="Rebuild the RT tree and the checks of studies from the catalog now.")
def analyse_command(
    study_uids: list[str] = typer.Argument(None, help="Study Instance UID(s) to analyse."),
    all_studies: bool = typer.Option(False, "--all", help="Analyse every study of the catalog."),
    as_json: bool = JSON_OPTION,
) -> None:
    if bool(study_uids) == all_studies:
        fail("give either --all or one or more Study Instance UIDs", as_json)
    setup_django()
    from dicomflow.catalog import analysis
    from dicomflow.catalog.rt_selectors import get_study
    from dicomflow.errors import DicomflowError

    try:
        if all_studies:
            summary = analysis.analyse_all()
        else:
            summary = analysis.analyse_studies([get_study(uid).id for uid in study_uids])
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = summary.as_dict()
    human = (
        f"{len(doc['studies'])} studies: {doc['series']} series, {doc['edges']} references "
        f"({doc['missing_references']} missing), {doc['findings']} findings"
    )
    emit(doc, as_json, human)


@catalog_app.command("tree", help="The stored RT tree of a study.")
def tree_command(
    study_uid: str = typer.Argument(..., help="Study Instance UID."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.catalog.rt_selectors import get_study, is_analysed, study_tree
    from dicomflow.errors import DicomflowError

    try:
        study = get_study(study_uid)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    if not is_analysed(study):
        fail("this study has not been analysed yet; run 'dicomflow catalog analyse STUDY_UID'", as_json)
    document = study_tree(study)
    lines = []
    for s in document["series"]:
        line = f"{s['modality']:<9} {s['uid']}" + (f" [{s['approval_status']}]" if s["approval_status"] else "")
        line += "".join(f"\n          -> {ref}" for ref in s["references"])
        line += "".join(f"\n          -> {ref} (absent)" for ref in s["missing_references"])
        lines.append(line)
    emit(document, as_json, "\n".join(lines))


@catalog_app.command("select", help="Series and everything they reference, from the stored RT tree.")
def select_command(
    series_uids: list[str] = typer.Argument(..., help="Series Instance UID(s)."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.catalog.rt_selectors import selection_closure
    from dicomflow.errors import DicomflowError

    try:
        selected = selection_closure(*series_uids)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit({"selected": selected}, as_json, "\n".join(selected))


@catalog_app.command("checks", help="The stored check results of series (completeness, validity, RT QC).")
def checks_command(
    series_uids: list[str] = typer.Argument(..., help="Series Instance UID(s)."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.catalog.rt_selectors import get_series, series_checks
    from dicomflow.errors import DicomflowError

    reports = []
    try:
        for uid in series_uids:
            report = series_checks(get_series(uid))
            if report is None:
                fail("a series has not been analysed yet; run 'dicomflow catalog analyse STUDY_UID'", as_json)
            reports.append(report)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    lines = []
    for r in reports:
        state = {True: "complete", False: "INCOMPLETE", None: "-"}[r["complete"]]
        lines.append(f"{r['modality']:<9} {r['uid']} {state}")
        lines.extend(f"    {f['severity']:<7} {f['code']}: {f['message']}" for f in r["findings"])
    emit({"series": reports}, as_json, "\n".join(lines))
