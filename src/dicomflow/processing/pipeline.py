"""The work of each job stage. Called only by :func:`dicomflow.processing.services.run_stage`.

Each stage reads what earlier stages left in ``job.state`` (work folders, de-identified UIDs —
never identities), redoes its own work from scratch when retried (its output folder is emptied
first) and raises a :class:`~dicomflow.errors.DicomflowError` with a reason a user can act on.

Work folders: ``$DICOMFLOW_HOME/work/jobs/<id>/{deid,output,processor,results}``.
"""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import pydicom
from django.conf import settings
from django.db import connection

from dicomflow.core.rules import SeriesStatus, template_problems
from dicomflow.errors import DeidentificationError, DicomflowError, InputError, ProcessingError
from dicomflow.processing import results, services
from dicomflow.processing.models import Job, LogLevel, Result, ResultKind, SeriesState, Stage


def job_dir(job: Job) -> Path:
    return Path(settings.WORK_DIR) / "jobs" / str(job.pk)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _save_state(job: Job, **values) -> None:
    job.state = {**(job.state or {}), **values}
    Job.objects.filter(pk=job.pk).update(state=job.state)


def _log(job: Job, stage: str, message: str, level: str = LogLevel.INFO) -> None:
    services.write_log(message, level=level, job=job, series_id=job.series_id, stage=stage)


# --- project keys ------------------------------------------------------------------------------------------
def project_deid(project_key: str):
    """(ProjectKey, Options, KeyStore) of a project: the Project row's options when it exists."""
    from dicomflow.core.deid import KeyStore

    store = KeyStore(settings.PROJECT_KEYS_DIR)
    key = store.project_key(project_key, create=True)
    options = None
    if "projects_project" in connection.introspection.table_names():
        from dicomflow.projects.models import Project

        project = Project.objects.filter(key=project_key).first()
        if project is not None:
            options = project.deid_options()
    return key, options or store.options(project_key), store


# --- stages ----------------------------------------------------------------------------------------------
def uploading(job: Job) -> None:
    """Files are local for folder jobs and stored for catalogued series: nothing to transfer."""


def importing(job: Job) -> None:
    from dicomflow.intake.models import SourceKind
    from dicomflow.intake.services import import_paths

    report = services_import(job, import_paths, SourceKind.CLI)
    if not report.series_ids:
        raise InputError(f"{job.input_path}: no DICOM series found to process")
    _save_state(job, imported_series=sorted(report.series_ids))
    _log(job, Stage.IMPORTING, f"imported {report.files_seen} files: {report.instances_new} new, "
                               f"{report.instances_duplicate} duplicate, {len(report.ignored)} ignored; "
                               f"{len(report.series_ids)} series")


def services_import(job: Job, import_paths, source_kind):
    def progress(done: int, total: int | None) -> None:
        services.update_progress(job.pk, Stage.IMPORTING, done, total or 0)

    report = import_paths([job.input_path], source_kind=source_kind, received_from=f"processing job {job.pk}",
                          progress=progress)
    services.update_progress(job.pk, Stage.IMPORTING, report.files_seen, report.files_seen)
    return report


def _choose_series(job: Job) -> tuple[int, object]:
    """The series to process and its template (given, chosen by rules, or by hand)."""
    candidates = [job.series_id] if job.series_id else list(job.state.get("imported_series", []))
    states = {s.series_id: s for s in services.evaluate_series(candidates, job=job)}
    if job.template_id:
        template = job.template
        problems = {sid: template_problems(template.core(), services.series_context(sid)) for sid in candidates}
        fitting = [sid for sid in candidates if not problems[sid]]
        if len(fitting) == 1:
            return fitting[0], template
        if len(candidates) == 1:
            raise InputError("; ".join(problems[candidates[0]]))
        why = "; ".join(sorted({p for sid in candidates for p in problems[sid]}))
        raise InputError(f"{len(fitting)} of {len(candidates)} series fit template '{template.name}'"
                         + (f" ({why})" if why and not fitting else "")
                         + "; give a folder with exactly one series it can process")
    matched = [sid for sid in candidates if states[sid].status == SeriesStatus.RULE_MATCHED.value]
    if job.series_id and not matched:
        state = SeriesState.objects.get(series_id=job.series_id)
        if state.template_id and state.chosen_by_id:
            return job.series_id, state.template
    if len(matched) != 1:
        summary = ", ".join(f"{states[sid].status}: {states[sid].explanation.get('summary', '')}" for sid in candidates)
        raise InputError(f"rules chose a template for {len(matched)} of {len(candidates)} series ({summary}); "
                         "give --template or choose a template by hand")
    return matched[0], states[matched[0]].template


def blocking_findings(series_id: int, template, overridden=frozenset(), log=None) -> list[str]:
    """The check findings of a catalogued series that block ``template`` (``"CODE: message"``), those
    in ``overridden`` aside; ``log(message, level)`` hears every finding worth telling."""
    from dicomflow.core.checks import Severity, record_from_dataset, run_checks

    paths = services.instance_paths(series_id)
    records = [record_from_dataset(pydicom.dcmread(p, stop_before_pixels=True), str(p)) for p in paths]
    blocking = set(template.core().blocking_findings)
    blockers = []
    for report in run_checks(records):
        for finding in report.findings:
            if finding.severity == Severity.INFO and finding.code not in blocking:
                continue
            if finding.code in blocking and finding.code not in overridden:
                if log:
                    log(f"check {finding.code} (blocks '{template.name}'): {finding.message}", LogLevel.ERROR)
                blockers.append(f"{finding.code}: {finding.message}")
            elif log:
                note = " (blocking finding overridden)" if finding.code in blocking else ""
                log(f"check {finding.code}{note}: {finding.message}", LogLevel.WARNING)
    return blockers


def checking(job: Job) -> None:
    series_id, template = _choose_series(job)
    Job.objects.filter(pk=job.pk).update(series_id=series_id, template=template)
    job.series_id, job.template = series_id, template
    SeriesState.objects.filter(series_id=series_id).update(template=template)
    paths = services.instance_paths(series_id)
    _log(job, Stage.CHECKING, f"template '{template.name}' for a series of {len(paths)} instances")
    overridden = {o["code"] for o in (job.state or {}).get("overrides", [])}
    blockers = blocking_findings(series_id, template, overridden,
                                 log=lambda message, level: _log(job, Stage.CHECKING, message, level))
    services.update_progress(job.pk, Stage.CHECKING, len(paths), len(paths))
    if blockers:
        raise InputError(f"the series has {len(blockers)} finding(s) that block template '{template.name}': "
                         + "; ".join(blockers[:5])
                         + "; fix the data, or a data manager may override a finding with a reason and retry")
    services.set_series_status(series_id, SeriesStatus.READY_FOR_DEIDENTIFICATION)


def _daemon() -> bool:
    return multiprocessing.current_process().daemon  # Celery prefork children may not fork


def deidentifying(job: Job) -> None:
    from dicomflow.core.deid import deidentify_paths

    key, options, store = project_deid(job.project_key)
    paths = services.instance_paths(job.series_id)
    out = _fresh(job_dir(job) / "deid")
    report = deidentify_paths(paths, out, key, options, workers=1 if _daemon() else None,
                              progress=lambda d, t: services.update_progress(job.pk, Stage.DEIDENTIFYING, d, t))
    if not report.ok or report.quarantined or report.files_out != len(paths):
        services.set_series_status(job.series_id, SeriesStatus.DEIDENTIFICATION_FAILED)
        reasons = sorted({f["reason"] for f in report.failed + report.quarantined})
        raise DeidentificationError(
            f"{report.files_out} of {len(paths)} files de-identified; leak-scan findings {len(report.findings)}; "
            + ("; ".join(reasons[:5]) or "nothing released"))
    store.append_reverse_records(job.project_key, report.reverse_map.records())
    first = pydicom.dcmread(out / report.outputs[0], stop_before_pixels=True)
    sent = sorted(str(pydicom.dcmread(out / rel, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                      .SOPInstanceUID) for rel in report.outputs)
    _save_state(job, deid_dir=str(out), deid_files=[str(out / rel) for rel in report.outputs],
                deid_series_uid=str(first.SeriesInstanceUID), deid_study_uid=str(first.StudyInstanceUID),
                deid_frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")), deid_instances=sent)
    services.set_series_status(job.series_id, SeriesStatus.DEIDENTIFIED)
    _log(job, Stage.DEIDENTIFYING, f"{report.files_out} files de-identified with the keys of project "
                                   f"'{job.project_key}'")


def processing(job: Job) -> None:
    from dicomflow.processing.processors import ProcessorRequest, get_processor

    template = job.template.core()
    processor = get_processor(template.processor)
    base = job_dir(job)
    output = _fresh(base / "output")
    scratch = _fresh(base / "processor")
    Result.objects.filter(job=job).delete()
    services.set_series_status(job.series_id, SeriesStatus.SENT_FOR_PROCESSING)
    request = ProcessorRequest(
        input_dir=Path(job.state["deid_dir"]), paths=[Path(p) for p in job.state["deid_files"]], output_dir=output,
        template=template, work_dir=scratch, log=lambda level, message: _log(job, Stage.PROCESSING, message, level),
    )
    written = processor(request)
    if not written:
        raise ProcessingError(f"processor '{template.processor}' returned no result")
    if template.derived:
        _add_derived(job, template, written, request.paths)
    for path in written:
        kind = results.kind_of(path)
        Result.objects.create(job=job, kind=kind, deidentified_path=str(path))
    services.update_progress(job.pk, Stage.PROCESSING, 1, 1)
    services.set_series_status(job.series_id, SeriesStatus.RESULT_RECEIVED)
    _log(job, Stage.PROCESSING, f"processor '{template.processor}' returned {len(written)} file(s)")


def _add_derived(job: Job, template, written: list[Path], image_paths: list[Path]) -> None:
    """The template's derived structures (margins, booleans, crops) computed on the result's masks
    and written into its structure set before anything checks or exports it."""
    from dicomflow.core.segmentation.derived import add_derived_structures

    structure_sets = [p for p in written if results.kind_of(p) == ResultKind.RTSTRUCT]
    if not structure_sets:
        raise ProcessingError("the template defines derived structures but the processor returned no structure set")
    try:
        for path in structure_sets:
            added = add_derived_structures(path, image_paths, template)
            _log(job, Stage.PROCESSING, f"derived structure(s) added: {', '.join(added)}")
    except DicomflowError as exc:
        raise ProcessingError(f"derived structures could not be computed: {exc}") from None


def verifying(job: Job) -> None:
    problems = []
    rows = list(Result.objects.filter(job=job))
    for row in rows:
        reason = results.verify(Path(row.deidentified_path), job.state)
        if reason:
            problems.append(f"{Path(row.deidentified_path).name}: {reason}")
        else:
            Result.objects.filter(pk=row.pk).update(verified=True)
    if problems:
        services.set_series_status(job.series_id, SeriesStatus.RESULT_INVALID)
        raise ProcessingError("result invalid: " + "; ".join(problems))
    _log(job, Stage.VERIFYING, f"{len(rows)} result file(s) reference exactly the de-identified series sent")


def reidentifying(job: Job) -> None:
    from dicomflow.core.deid import ReverseMap

    _, _, store = project_deid(job.project_key)
    rmap = ReverseMap.from_records(store.load_reverse_records(job.project_key))
    original_series = rmap.uids.get(job.state["deid_series_uid"])
    out = _fresh(job_dir(job) / "results")
    template = job.template.core()
    original = pydicom.dcmread(services.instance_paths(job.series_id)[0], stop_before_pixels=True)
    for row in Result.objects.filter(job=job):
        path, renamed = results.reidentify(Path(row.deidentified_path), out, rmap, template.rois, original_series,
                                           original)
        Result.objects.filter(pk=row.pk).update(path=str(path), reidentified=True)
        renamed = [(a, b) for a, b in renamed if a != b]
        if renamed:
            _log(job, Stage.REIDENTIFYING, "ROIs renamed per template: " + ", ".join(f"{a} → {b}" for a, b in renamed))
    _log(job, Stage.REIDENTIFYING, "results carry the original patient and UIDs again")


def quality_control(job: Job) -> None:
    """Never run by a worker: the stage waits for :func:`services.approve_qc` or :func:`services.reject_qc`."""


def exporting(job: Job) -> None:
    services.catalogue_results(job)  # linked to the job by its results' UIDs (selectors.result_series)
    destinations = list(job.template.core().destinations) if job.template else []
    out_dir = {"type": "folder", "path": job.out_dir} if job.out_dir else None
    if out_dir:  # checked against the export roots when the job was made (any folder for the CLI's operator)
        destinations.append(out_dir)
    rows = list(Result.objects.filter(job=job))
    if not destinations:
        _log(job, Stage.EXPORTING, "the template names no destination: results are available for download")
        return
    failures = []
    files = [Path(r.path) for r in rows]
    outcomes = []
    for destination in destinations:
        outcome = results.export_with_fallback(files, destination, any_folder=destination is out_dir)
        outcomes.append(outcome)
        level = LogLevel.INFO if outcome["ok"] else LogLevel.ERROR
        _log(job, Stage.EXPORTING, f"export to {outcome['destination']}: "
                                   + ("done" if outcome["ok"] else outcome["reason"]), level)
        if outcome.get("fallback_used"):
            _log(job, Stage.EXPORTING, f"fallback destination used after: {outcome['primary_reason']}",
                 LogLevel.WARNING)
        if not outcome["ok"]:
            failures.append(f"{outcome['destination']}: {outcome['reason']}")
    for row in rows:
        exported = [{k: v for k, v in o.items() if k != "paths"} | {"path": o.get("paths", {}).get(row.path, "")}
                    for o in outcomes]
        Result.objects.filter(pk=row.pk).update(exported_to=exported)
    if failures:
        services.set_series_status(job.series_id, SeriesStatus.EXPORT_FAILED)
        raise ProcessingError("export failed: " + "; ".join(failures))
    services.set_series_status(job.series_id, SeriesStatus.RESULT_EXPORTED)


STAGES = {
    Stage.UPLOADING.value: uploading,
    Stage.IMPORTING.value: importing,
    Stage.CHECKING.value: checking,
    Stage.DEIDENTIFYING.value: deidentifying,
    Stage.PROCESSING.value: processing,
    Stage.VERIFYING.value: verifying,
    Stage.REIDENTIFYING.value: reidentifying,
    Stage.QUALITY_CONTROL.value: quality_control,
    Stage.EXPORTING.value: exporting,
}
