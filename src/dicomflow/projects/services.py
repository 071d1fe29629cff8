"""Writes of research projects: create, members, subjects, events, upload slots, staging.

Staging (``stage_series`` → ``run_staging_job``) makes a project's de-identified copy of chosen
clinical series, in stages whose progress (stage, done/total) is committed on the job row:

==========  =========================================================================
select      the requested series plus everything they reference (RT closure over the
            patient's clinical series: images from catalog rows, RT objects' headers
            from the stored files)
deidentify  the stored files, with the project's key and options; enrolled subjects get
            their study subject ID as Patient ID/Name. The leak scan must find nothing
            and no file may fail, else nothing is imported
import      the output is imported with ``import_paths(project=...)``: new UIDs are
            keyed, so staging again finds every instance a duplicate
finalise    clinical series → copy series rows (none/partly/fully per study)
==========  =========================================================================

Every action takes the acting user first (a Django user, or the command-line operator from
``dicomflow.accounts.actors``), checks their role with ``selectors.require`` and leaves one audit
entry where the audit log asks for it (staging, slot links, role changes; refusals too). Web, API,
admin and CLI call these functions and nothing else writes these models.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from dicomflow.accounts import audit
from dicomflow.accounts.models import AuditAction
from dicomflow.catalog.models import Instance, Patient, Series, Study
from dicomflow.core.deid import KeyStore, Options, deidentify_paths
from dicomflow.core.deid.pseudonyms import Pseudonymizer
from dicomflow.errors import (
    ConfirmationRequiredError,
    DeidentificationError,
    DicomflowError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
)
from dicomflow.progress import ProgressReporter, run_long_job
from dicomflow.projects.models import (
    OWN_COLUMNS,
    Capability,
    Event,
    Project,
    ProjectMembership,
    Role,
    Sex,
    StagedSeries,
    StagingJob,
    StagingStage,
    Subject,
    UploadSlot,
    UploadSlotLink,
    default_profile_options,
)
from dicomflow.projects.selectors import can, can_see_clinical, require

log = logging.getLogger(__name__)
STAGING_SOURCE_KIND = "staging"  # ImportRun.source_kind of staging imports


def key_store() -> KeyStore:
    """The file key store shared with ``dicomflow deid`` ($DICOMFLOW_HOME/keys/projects)."""
    return KeyStore(Path(settings.KEYS_DIR) / "projects")


# --- projects ----------------------------------------------------------------------------------
def _options_from(data: dict | Options | None) -> dict:
    if isinstance(data, Options):
        return data.to_dict()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("de-identification options must be a JSON object of option names and values")
    Options.from_dict(data)  # validates names and values (InputError)
    return dict(data)


def _apply_options(project: Project, data: dict) -> None:
    """Split an options dict into the profile JSON and the project's own columns."""
    profile = {**default_profile_options(), **{k: v for k, v in data.items() if k not in OWN_COLUMNS}}
    project.options = profile
    if "uid_root" in data:
        project.uid_root = data["uid_root"] or ""
    if "date_shift_days" in data:
        project.date_shift_min_days, project.date_shift_max_days = (int(x) for x in data["date_shift_days"])
    if "allow_burned_in" in data:
        project.allow_burned_in = bool(data["allow_burned_in"])
    project.deid_options()  # validates the combination (InputError)


def create_project(key: str, name: str, options: dict | Options | None = None, description: str = "") -> Project:
    """Create a project and its secret key (on first use) in the key store.

    When ``dicomflow deid --project KEY`` already used this key, its stored options are adopted
    unless ``options`` are given, so data de-identified before keeps matching.
    """
    store = key_store()
    had_key = store.exists(key)  # also validates the key's characters (InputError)
    if Project.objects.filter(key=key).exists():
        raise InputError(f"a project with key '{key}' exists already")
    data = _options_from(options)
    if not data and had_key:
        data = store.options(key).to_dict()
    project = Project(key=key, name=name or key, description=description)
    _apply_options(project, data)
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError:
        raise InputError(f"a project with key '{key}' exists already") from None
    store.project_key(key, create=True)
    store.save_options(key, project.deid_options())
    return project


def sync_key_store(project: Project) -> None:
    """Make sure the project's key exists and the key store holds its current options."""
    store = key_store()
    store.project_key(project.key, create=True)
    store.save_options(project.key, project.deid_options())


def update_project_options(project: Project, options: dict | Options) -> Project:
    """Change a project's options; the key store copy follows so ``dicomflow deid`` agrees."""
    _apply_options(project, _options_from(options))
    project.save()
    key_store().save_options(project.key, project.deid_options())
    return project


def _require(actor, project: Project, capability: str, action: AuditAction | None = None, obj: str = "") -> None:
    """``selectors.require`` that leaves one DENIED audit entry when an audited action is refused."""
    try:
        require(actor, project, capability)
    except (NotFoundError, PermissionDeniedError) as exc:
        if action is not None:
            audit.denied(actor, action, project=project, obj=obj, detail=_why(exc))
        raise


def _why(exc: Exception) -> str:
    return "not a member of the project" if isinstance(exc, NotFoundError) else str(exc)


# --- members -------------------------------------------------------------------------------------
def add_member(actor, project: Project, user, role: str = Role.VIEWER) -> ProjectMembership:
    """Give ``user`` ``role`` in ``project`` (or change their role): project administrators, superusers
    and the command-line operator. Audited as a role change."""
    obj = f"user #{user.pk}"
    _require(actor, project, Capability.ADMINISTER, AuditAction.ROLE_CHANGE, obj)
    if role not in Role.values:
        raise InputError(f"unknown role '{role}'; use one of {', '.join(Role.values)}")
    if not getattr(user, "is_active", False):
        raise InputError("an inactive user cannot become a member")
    member, created = ProjectMembership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    audit.record(actor, AuditAction.ROLE_CHANGE, project=project, obj=obj,
                 detail=f"{'added as' if created else 'role set to'} {role}")
    return member


def remove_member(actor, project: Project, user) -> None:
    """Take ``user`` out of ``project`` (same rights as ``add_member``); audited as a role change."""
    obj = f"user #{user.pk}"
    _require(actor, project, Capability.ADMINISTER, AuditAction.ROLE_CHANGE, obj)
    deleted, _ = ProjectMembership.objects.filter(project=project, user=user).delete()
    if not deleted:
        raise NotFoundError("this user is not a member of the project")
    audit.record(actor, AuditAction.ROLE_CHANGE, project=project, obj=obj, detail="removed from the project")


# --- subjects, events, slots -------------------------------------------------------------------
def keyed_pseudonym(project: Project, patient_id: str, issuer: str = "") -> str:
    """The pseudonym the engine gives this patient (Patient ID + Issuer) in this project when not enrolled."""
    key = key_store().project_key(project.key, create=True)
    return Pseudonymizer(key.secret, project.deid_options()).patient_pseudonym(patient_id, issuer)


def _as_date(value, what: str) -> datetime.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{what} must be a date (YYYY-MM-DD)") from None


def _checked_expectations(sex: str, birth_date, birth_year) -> tuple[str, datetime.date | None, int]:
    """Sex and birth date or year are what the sanity check compares the data with: both required."""
    sex = (sex or "").strip().upper()
    if sex not in (Sex.FEMALE, Sex.MALE, Sex.OTHER):
        raise InputError("record the subject's sex: F, M or O")
    birth_date = _as_date(birth_date, "the birth date")
    today = timezone.localdate()
    if birth_date is not None and not datetime.date(1900, 1, 1) <= birth_date <= today:
        raise InputError("the birth date must lie between 1900-01-01 and today")
    if birth_year in (None, ""):
        birth_year = birth_date.year if birth_date else None
    if birth_year is None:
        raise InputError("record the subject's birth date or birth year")
    try:
        birth_year = int(birth_year)
    except (TypeError, ValueError):
        raise InputError("the birth year must be a whole number") from None
    if not 1900 <= birth_year <= today.year:
        raise InputError(f"the birth year must lie between 1900 and {today.year}")
    if birth_date is not None and birth_date.year != birth_year:
        raise InputError("the birth year differs from the year of the birth date")
    return sex, birth_date, birth_year


def enrol_subject(
    actor,
    project: Project,
    study_subject_id: str | None = None,
    patient: Patient | None = None,
    expected_sex: str = "",
    expected_birth_date=None,
    expected_birth_year: int | None = None,
) -> Subject:
    """Enrol a subject (MANAGE); staged copies of ``patient`` then carry ``study_subject_id`` as Patient ID/Name.

    Without a study subject ID the keyed pseudonym is used. The ID never equals a clinical Patient ID
    of the catalog (anyone's, not only this patient's). Sex and birth date or year are required: the
    sanity check compares the data with them. A patient whose data were staged before enrolment keeps
    its pseudonym (one subject, one identity in the project).
    """
    values = check_enrolment(actor, project, study_subject_id, patient, expected_sex, expected_birth_date,
                             expected_birth_year)
    try:
        with transaction.atomic():
            return Subject.objects.create(project=project, **values)
    except IntegrityError:
        raise InputError("this study subject ID or patient is enrolled in the project already") from None


def check_enrolment(actor, project: Project, study_subject_id: str | None = None, patient: Patient | None = None,
                    expected_sex: str = "", expected_birth_date=None, expected_birth_year: int | None = None) -> dict:
    """Every check of ``enrol_subject`` without writing (forms validate with it); the Subject's fields."""
    _require(actor, project, Capability.MANAGE)
    if patient is not None and patient.project_id is not None:
        raise InputError("enrol the clinical patient (Study0), not a project's de-identified copy")
    sex, birth_date, birth_year = _checked_expectations(expected_sex, expected_birth_date, expected_birth_year)
    pseudonym = keyed_pseudonym(project, patient.patient_id, patient.issuer_of_patient_id) if patient is not None else ""
    study_subject_id = (study_subject_id or pseudonym).strip()
    if not study_subject_id:
        raise InputError("give a study subject ID (or a clinical patient to derive the pseudonym from)")
    if len(study_subject_id) > 64 or "\\" in study_subject_id:
        raise InputError("a study subject ID has at most 64 characters and no backslash")
    if Patient.objects.filter(project__isnull=True, patient_id=study_subject_id).exists():
        raise InputError("this study subject ID is a clinical Patient ID in the catalog; choose another")
    if patient is not None:
        if study_subject_id in (patient.patient_id, patient.patient_name):
            raise InputError("the study subject ID must not be the patient's clinical identifier or name")
        staged = StagedSeries.objects.filter(project=project, source_series__study__patient=patient).exists()
        if staged and study_subject_id != pseudonym:
            raise InputError(
                "data of this patient were staged into the project before enrolment under the keyed "
                "pseudonym; enrol with that pseudonym (leave the study subject ID empty)"
            )
    same = Q(study_subject_id=study_subject_id)
    if patient is not None:
        same |= Q(patient=patient)
    if Subject.objects.filter(same, project=project).exists():
        raise InputError("this study subject ID or patient is enrolled in the project already")
    return {"study_subject_id": study_subject_id, "pseudonym": pseudonym, "patient": patient, "expected_sex": sex,
            "expected_birth_date": birth_date, "expected_birth_year": birth_year}


def _name(value: str, what: str, limit: int = 100) -> str:
    value = (value or "").strip()
    if not value or len(value) > limit:
        raise InputError(f"{what} has 1 to {limit} characters")
    return value


def add_event(actor, subject: Subject, name: str, date=None, order: int | None = None) -> Event:
    """An event (visit, time point) of a subject (MANAGE); the same name gives the same event."""
    _require(actor, subject.project, Capability.MANAGE)
    name = _name(name, "an event name")
    if order is None:
        order = subject.events.count()
    event, _ = Event.objects.get_or_create(subject=subject, name=name,
                                           defaults={"date": _as_date(date, "the event date"), "order": order})
    return event


def add_slot(actor, event: Event, name: str) -> UploadSlot:
    """An upload slot of an event (MANAGE); the same name gives the same slot."""
    _require(actor, event.subject.project, Capability.MANAGE)
    slot, _ = UploadSlot.objects.get_or_create(event=event, name=_name(name, "a slot name"))
    return slot


def _may_link(actor, project: Project, study: Study) -> None:
    """MANAGE, or UPLOAD for a study of the actor's own upload into the project."""
    if can(actor, project, Capability.MANAGE) or _own_upload(actor, project, study):
        return
    _require(actor, project, Capability.MANAGE, AuditAction.SLOT_LINK, f"study #{study.pk}")


def _own_upload(actor, project: Project, study: Study) -> bool:
    from dicomflow.projects.models import ProjectUpload

    if not getattr(actor, "pk", None) or not can(actor, project, Capability.UPLOAD):
        return False
    uploads = ProjectUpload.objects.filter(project=project, session__owner=actor).values_list("staged_studies", flat=True)
    return any(study.study_instance_uid in (uids or []) for uids in uploads)


def link_study(actor, slot: UploadSlot, study: Study, confirm: bool = False) -> UploadSlot:
    """Link a project copy study to a slot; audited.

    A slot holding another study changes only when ``confirm`` is true (else
    ``ConfirmationRequiredError``, HTTP 409); the replaced link stays in the slot's history.
    """
    project = slot.event.subject.project
    obj = f"slot #{slot.pk}"
    _may_link(actor, project, study)
    if study.project_id != project.pk:
        raise InputError("only a de-identified study of the slot's own project can be linked to it")
    with transaction.atomic():
        slot = UploadSlot.objects.select_for_update().get(pk=slot.pk)
        if slot.study_id == study.pk:
            return slot
        if slot.study_id is not None and not confirm:
            raise ConfirmationRequiredError(
                "this slot already holds another study; confirm to replace it (the replaced link stays in its history)"
            )
        UploadSlotLink.objects.filter(slot=slot, replaced_at__isnull=True).update(replaced_at=timezone.now())
        UploadSlotLink.objects.create(
            slot=slot, study=study, study_instance_uid=study.study_instance_uid,
            linked_by=actor if getattr(actor, "pk", None) else None,
        )
        replaced = slot.study_id is not None
        slot.study = study
        slot.save(update_fields=["study"])
        audit.record(actor, AuditAction.SLOT_LINK, project=project, obj=obj,
                     detail=f"study #{study.pk} linked" + (", replacing the previous study" if replaced else ""))
    return slot

# --- sanity overrides ----------------------------------------------------------------------------
def sanity_result_of(project: Project, result_id: int):
    """A sanity result about the project's data: of one of its subjects, or of its de-identified copy."""
    from django.db.models import Q

    from dicomflow.catalog.models import SanityResult

    result = SanityResult.objects.filter(Q(subject__project=project) | Q(patient__project=project), pk=result_id).first()
    if result is None:
        raise NotFoundError(f"no sanity result #{result_id} in project '{project.key}'")
    return result


def override_sanity(actor, project: Project, result, reason: str, status: str = "MATCHES"):
    """Accept a sanity conflict of the project's data as ``status`` for a written reason (MANAGE; audited).

    The result itself is kept; the override is a row of its own (``catalog.analysis.override_sanity``).
    """
    from dicomflow.catalog.analysis import override_sanity as record_override

    obj = f"sanity result #{result.pk}"
    _require(actor, project, Capability.MANAGE, AuditAction.OVERRIDE, obj)
    if not (result.subject_id and result.subject.project_id == project.pk) and result.patient.project_id != project.pk:
        raise NotFoundError(f"no sanity result #{result.pk} in project '{project.key}'")
    override = record_override(result, actor, reason, status)
    audit.record(actor, AuditAction.OVERRIDE, project=project, obj=obj,
                 detail=f"{result.status} accepted as {override.status}")
    return override


# --- staging -----------------------------------------------------------------------------------
def staging_closure(study: Study, series_uids: Iterable[str]) -> list[str]:
    """The requested clinical series and everything they reference, transitively.

    The graph covers the patient's clinical series (references may cross studies). Image series
    come from catalog rows; RT and other non-volume objects from their stored headers.
    """
    from dicomflow.core.rt import InstanceRef, RTGraph, instance_from_dataset, read_header
    from dicomflow.core.rt.model import NON_VOLUME_MODALITIES

    records: list[InstanceRef] = []
    rows = (
        Instance.objects.filter(series__study__patient_id=study.patient_id, series__project__isnull=True)
        .values_list(
            "sop_instance_uid", "sop_class_uid", "stored_path", "series__series_instance_uid",
            "series__study__study_instance_uid", "series__modality", "series__frame_of_reference_uid",
        )
        .iterator()
    )
    for sop, sop_class, stored, series_uid, study_uid, modality, frame in rows:
        if modality.upper() in NON_VOLUME_MODALITIES:
            ds = read_header(str(Path(settings.STORE_DIR) / stored))
            if ds is not None:
                try:
                    records.append(instance_from_dataset(ds, stored))
                    continue
                except DicomflowError:
                    pass
        records.append(InstanceRef(sop, sop_class, series_uid, study_uid, modality, frame or None))
    return RTGraph.from_instances(records).closure(*series_uids)


def check_may_stage(actor, project: Project, obj: str = "") -> None:
    """MANAGE in the project and sight of the clinical pool; a refusal is audited (STAGE, DENIED)."""
    _require(actor, project, Capability.MANAGE, AuditAction.STAGE, obj)
    if not can_see_clinical(actor):
        audit.denied(actor, AuditAction.STAGE, project=project, obj=obj, detail="no clinical-pool access")
        raise PermissionDeniedError("staging needs access to the clinical pool (permission 'view_clinical_pool')")


def _new_staging_job(project: Project, study: Study, series_uids: Iterable[str] | None, created_by) -> StagingJob:
    """Validate a staging request and record it as a Pending job (no permission check: callers do)."""
    if study.project_id is not None:
        raise InputError("stage from the clinical pool: this study is already a project's de-identified copy")
    if project.deid_options().retain_uids:
        raise InputError(
            f"project '{project.key}' retains UIDs: its copy would collide with the clinical study in "
            "the catalog; use 'dicomflow deid' to a folder instead"
        )
    available = list(study.series.values_list("series_instance_uid", flat=True))
    requested = list(dict.fromkeys(series_uids or available))
    unknown = [u for u in requested if u not in set(available)]
    if unknown:
        raise InputError(f"{len(unknown)} requested series UID(s) are not series of this study")
    if not requested:
        raise InputError("this study has no series to stage")
    return StagingJob.objects.create(
        project=project, source_study=study, requested_series=requested,
        created_by=created_by if getattr(created_by, "pk", None) else None,
    )


def create_staging_job(actor, project: Project, study: Study, series_uids: Iterable[str] | None = None) -> StagingJob:
    """Check and record a staging request as a Pending job (not started); one STAGE audit entry."""
    check_may_stage(actor, project, f"study #{study.pk}")
    job = _new_staging_job(project, study, series_uids, actor)
    audit.record(actor, AuditAction.STAGE, project=project, obj=f"study #{study.pk}",
                 detail=f"staging job #{job.pk}: {len(job.requested_series)} series requested")
    return job


def stage_series(actor, project: Project, study: Study, series_uids: Iterable[str] | None = None,
                 run_inline: bool = False) -> StagingJob:
    """Stage series (with all they reference) into ``project``: inline, or as a Celery task on commit.

    The actor needs MANAGE in the project and sight of the clinical pool (the operator has both).
    """
    job = create_staging_job(actor, project, study, series_uids)
    if run_inline:
        return run_staging_job(job.pk)
    enqueue_staging_job(job)
    return job


def stage_upload(owner, project: Project, study: Study) -> StagingJob:
    """Stage a study the owner has just uploaded into the project (run inline; the import task calls it).

    The uploader's right to put these data into the project was checked as UPLOAD when the upload
    was created, and is checked again here; they need no sight of the rest of the clinical pool.
    """
    _require(owner, project, Capability.UPLOAD, AuditAction.STAGE, f"study #{study.pk}")
    job = _new_staging_job(project, study, None, owner)
    audit.record(owner, AuditAction.STAGE, project=project, obj=f"study #{study.pk}",
                 detail=f"staging job #{job.pk}: the study of upload into the project")
    return run_staging_job(job.pk)

def enqueue_staging_job(job: StagingJob) -> None:
    from dicomflow.projects.tasks import run_staging

    task_id = uuid.uuid4().hex
    StagingJob.objects.filter(pk=job.pk).update(task_id=task_id)
    transaction.on_commit(lambda: run_staging.apply_async((job.pk,), task_id=task_id))


def run_staging_job(job_id: int) -> StagingJob:
    """The body of the staging task (never raises). A job not pending (taken, done, gone) is left alone."""
    run_long_job(StagingJob, job_id, _stage, stage=StagingStage.SELECT)
    return StagingJob.objects.get(pk=job_id)


# What staging records on the job, whether it finished or failed (the reasons a staging stopped).
_RESULT_FIELDS = ("selected_series", "files_in", "files_out", "failed", "quarantined", "leak_findings",
                  "deid_record", "rt_integrity", "instances_new", "instances_duplicate")


def _stage(job: StagingJob, report: ProgressReporter) -> dict:
    """Run the stages in a work folder of their own; the results are stored even when a stage fails."""
    out_dir = Path(settings.WORK_DIR) / f"staging-{job.pk}-{uuid.uuid4().hex[:8]}"
    try:
        _run(job, out_dir, report)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        StagingJob.objects.filter(pk=job.pk).update(**{name: getattr(job, name) for name in _RESULT_FIELDS})
    return {"stage": StagingStage.DONE}  # done/total stay the last stage's count


def _run(job: StagingJob, out_dir: Path, progress: ProgressReporter) -> None:
    from dicomflow.intake.services import import_paths

    project, study = job.project, job.source_study
    progress(StagingStage.SELECT, 0, len(job.requested_series))
    selected = staging_closure(study, job.requested_series)
    job.selected_series = selected
    instances = list(
        Instance.objects.filter(series__series_instance_uid__in=selected, series__project__isnull=True)
        .values_list("stored_path", flat=True)
    )
    files = [Path(settings.STORE_DIR) / p for p in instances]
    StagingJob.objects.filter(pk=job.pk).update(selected_series=selected)
    progress(StagingStage.SELECT, len(job.requested_series), len(job.requested_series))

    store = key_store()
    key = store.project_key(project.key, create=True)
    options = project.deid_options()
    subject_ids = {  # keyed as the engine keys identities: Patient ID, qualified by its issuer
        Pseudonymizer.identity(pid, issuer): subject_id
        for pid, issuer, subject_id in Subject.objects.filter(project=project, patient__isnull=False).values_list(
            "patient__patient_id", "patient__issuer_of_patient_id", "study_subject_id")
    }
    progress(StagingStage.DEIDENTIFY, 0, len(files))
    workers = 1 if multiprocessing.current_process().daemon else None  # Celery prefork children cannot fork
    report = deidentify_paths(files, out_dir, key, options, subject_ids, workers=workers,
                              progress=lambda done, total: progress(StagingStage.DEIDENTIFY, done, total))
    job.files_in, job.files_out = report.files_in, report.files_out
    job.failed, job.quarantined = report.failed, report.quarantined
    job.leak_findings = len(report.findings)
    job.deid_record, job.rt_integrity = report.record, report.rt
    if report.findings:
        raise DeidentificationError(
            f"the leak scan found {len(report.findings)} identifying value(s) in the output; nothing was staged"
        )
    if report.failed:
        raise DeidentificationError(f"{len(report.failed)} file(s) could not be de-identified; nothing was staged")
    if not report.files_out:
        raise DeidentificationError("no file could be released (all quarantined); nothing was staged")
    store.append_reverse_records(project.key, report.reverse_map.records())

    progress(StagingStage.IMPORT, 0, report.files_out)
    imported = import_paths(
        [out_dir], source_kind=STAGING_SOURCE_KIND, received_from=f"staging job {job.pk} into {project.key}",
        workers=1 if report.files_out < 200 else None, project=project,
        progress=lambda done, _total: progress(StagingStage.IMPORT, done, report.files_out),
    )
    job.instances_new, job.instances_duplicate = imported.instances_new, imported.instances_duplicate
    if imported.conflicts or imported.ignored:
        job.failed = job.failed + imported.conflicts + imported.ignored
        raise DeidentificationError(
            f"{len(imported.conflicts) + len(imported.ignored)} de-identified file(s) could not be catalogued "
            "(conflict or ignored); see the job's failed list"
        )

    progress(StagingStage.FINALISE, 0, len(selected))
    _record_copies(job, selected, report.reverse_map.uids)
    progress(StagingStage.FINALISE, len(selected), len(selected))


def _record_copies(job: StagingJob, selected: list[str], new_to_original: dict[str, str]) -> None:
    """One StagedSeries row per clinical series that now has a copy in the project."""
    original_to_new = {o: n for n, o in new_to_original.items() if o in set(selected)}
    sources = {
        s.series_instance_uid: s
        for s in Series.objects.filter(series_instance_uid__in=selected, project__isnull=True).annotate(
            n=Count("instances")
        )
    }
    copies = {
        s.series_instance_uid: s
        for s in Series.objects.filter(series_instance_uid__in=original_to_new.values(), project=job.project)
    }
    for uid, source in sources.items():
        copy = copies.get(original_to_new.get(uid, ""))
        if copy is None:
            continue  # e.g. every instance quarantined
        StagedSeries.objects.update_or_create(
            project=job.project, source_series=source,
            defaults={"copy_series": copy, "job": job, "source_instances": source.n},
        )


# --- upload sanity overrides (the browser uploader) --------------------------------------------------
UPLOAD_CONFLICT_KINDS = ("sex", "birth_date", "birth_year")


def override_upload_conflicts(actor, project: Project, subject: Subject, conflicts: Iterable[str],
                              reason: str) -> list[str]:
    """Record that ``actor`` uploads data whose headers conflict with ``subject`` (sex, birth date or
    year, as the browser's sanity check found before sending) for ``reason``: UPLOAD in the project,
    one OVERRIDE audit entry naming the kinds of conflict and the reason (no header values)."""
    _require(actor, project, Capability.UPLOAD, AuditAction.OVERRIDE, f"subject #{subject.pk}")
    if subject.project_id != project.pk:
        raise NotFoundError(f"no such subject in project '{project.key}'")
    kinds = sorted(set(conflicts or ()))
    unknown = [k for k in kinds if k not in UPLOAD_CONFLICT_KINDS]
    if not kinds or unknown:
        raise InputError(f"name the conflicts to override: {', '.join(UPLOAD_CONFLICT_KINDS)}")
    reason = " ".join((reason or "").split())
    if len(reason) < 3:
        raise InputError("give a reason for the override (at least 3 characters)")
    audit.record(actor, AuditAction.OVERRIDE, project=project, obj=f"subject #{subject.pk}",
                 detail=f"upload sanity conflict overridden ({', '.join(kinds)}): {reason[:300]}")
    return kinds
