"""Uploads into a research project (the icometrix flow): checked when the upload is created, carried
out when its import finishes.

1. ``create_project_upload``: the uploader needs UPLOAD in the project; the subject, event and slot
   (by study subject ID and names) and the template must exist; a slot already holding a study needs
   ``confirm``. The resumable upload session is created and tied to the project (``ProjectUpload``).
2. The import task signals ``intake.signals.upload_imported``; ``finish_project_upload`` then, still
   inside that task (so the upload reads "finished" only when all of it is done):
   - stages every uploaded study into the project (the de-identified copy the project sees), as the
     uploader, one STAGE audit entry each; a given subject is tied to the uploaded patient, so the
     copy carries the study subject ID;
   - links the copy to the slot (one SLOT_LINK entry);
   - with a template, creates a processing job for every uploaded series that fits it and starts
     it. The job runs on the uploaded (clinical) series: it de-identifies with the project's keys,
     processes, and re-identifies the result, so an RTSTRUCT references the uploaded CT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from dicomflow.catalog.models import Series, Study
from dicomflow.errors import ConfirmationRequiredError, DicomflowError, InputError, NotFoundError
from dicomflow.projects import services
from dicomflow.projects.models import (
    Capability,
    Event,
    Project,
    ProjectUpload,
    StagedSeries,
    StagingStatus,
    Subject,
    UploadSlot,
)
from dicomflow.projects.selectors import copies_of, project_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadTarget:
    """Where an upload goes in a project, checked before any byte is sent."""

    project: Project
    subject: Subject | None = None
    slot: UploadSlot | None = None
    template: str = ""


def upload_target(actor, project_key: str, *, subject: str | None = None, event: str | None = None,
                  slot: str | None = None, template: str | None = None, confirm: bool = False) -> UploadTarget:
    """Check an upload into ``project_key``: UPLOAD there; subject/event/slot given by study subject ID and
    names (a slot needs its event, an event its subject); a known template; an occupied slot only with
    ``confirm``."""
    project = project_for(actor, project_key, Capability.UPLOAD)
    if (slot and not event) or (event and not subject):
        raise InputError("name the slot's event and the event's subject: give subject, event and slot together")
    found_subject = found_slot = None
    if subject:
        found_subject = Subject.objects.filter(project=project, study_subject_id=subject).first()
        if found_subject is None:
            raise NotFoundError("no subject with this study subject ID in the project; enrol the subject first")
    if event:
        found_event = Event.objects.filter(subject=found_subject, name=event).first()
        if found_event is None:
            raise NotFoundError("the subject has no event of this name")
        if slot:
            found_slot = UploadSlot.objects.filter(event=found_event, name=slot).first()
            if found_slot is None:
                raise NotFoundError("the event has no upload slot of this name")
            if found_slot.study_id is not None and not confirm:
                raise ConfirmationRequiredError(
                    "this slot already holds a study; send confirm=true to replace it with the upload "
                    "(the replaced link stays in the slot's history)"
                )
    if template:
        from dicomflow.processing.services import get_template

        get_template(template)  # InputError naming the known templates
    return UploadTarget(project, found_subject, found_slot, template or "")


def create_project_upload(actor, files: list[dict], source_kind: str, target: UploadTarget):
    """The resumable upload session, tied to the checked target."""
    from dicomflow.intake import resumable

    with transaction.atomic():
        session = resumable.create_session(files, owner=actor, source_kind=source_kind)
        ProjectUpload.objects.create(session=session, project=target.project, subject=target.subject,
                                     slot=target.slot, template=target.template)
    return session


def on_upload_imported(sender, session, report, **kwargs) -> None:
    """Receiver of ``intake.signals.upload_imported``: uploads into a project are carried on."""
    upload = ProjectUpload.objects.filter(session_id=session.pk).select_related(
        "project", "subject", "slot", "session__owner").first()
    if upload is None:
        return
    try:
        finish_project_upload(upload, report)
    except DicomflowError as exc:
        raise type(exc)(f"the files were imported, but putting them into project '{upload.project.key}' "
                        f"failed: {exc}") from exc


def finish_project_upload(upload: ProjectUpload, report) -> ProjectUpload:
    """Stage the uploaded studies, link the copy to the slot, start the template's jobs."""
    owner, project = upload.session.owner, upload.project
    if owner is None:
        raise InputError("the upload has no owner any more")
    studies = list(Study.objects.filter(pk__in=report.study_ids, project__isnull=True).order_by("pk"))
    if not studies:
        raise InputError("the upload holds no DICOM study to put into the project")
    fitting = _fitting_series(upload.template, report.series_ids) if upload.template else []
    if upload.subject is not None:
        _tie_subject(upload.subject, studies)
    copies = []
    for study in studies:
        job = services.stage_upload(owner, project, study)
        if job.status != StagingStatus.FINISHED:
            raise InputError(f"staging job #{job.pk} failed: {job.error}")
        copies += list(copies_of(study, project).values_list("study__study_instance_uid", flat=True).distinct())
    upload.staged_studies = sorted(set(copies))
    upload.save(update_fields=["staged_studies"])
    if upload.slot is not None:
        if len(upload.staged_studies) != 1:
            raise InputError(f"a slot takes one study; the upload holds {len(upload.staged_studies)}")
        copy = Study.objects.get(project=project, study_instance_uid=upload.staged_studies[0])
        services.link_study(owner, upload.slot, copy, confirm=True)  # confirmed when the upload was created
    if fitting:
        upload.jobs = _start_jobs(owner, project, upload.template, fitting)
        upload.save(update_fields=["jobs"])
    return upload


def _tie_subject(subject: Subject, studies: list[Study]) -> None:
    """The uploaded patient becomes the subject's clinical patient (or must already be it)."""
    patients = {s.patient_id for s in studies}
    if len(patients) != 1:
        raise InputError(f"an upload for one subject holds data of {len(patients)} patients")
    patient = studies[0].patient
    if subject.patient_id == patient.pk:
        return
    if subject.patient_id is not None:
        raise InputError("the uploaded data belong to another patient than the subject's")
    if subject.study_subject_id in (patient.patient_id, patient.patient_name):
        raise InputError("the study subject ID equals the uploaded Patient ID or name; enrol the subject under another ID")
    staged = StagedSeries.objects.filter(project=subject.project_id, source_series__study__patient=patient).exists()
    pseudonym = services.keyed_pseudonym(subject.project, patient.patient_id, patient.issuer_of_patient_id)
    if staged and subject.study_subject_id != pseudonym:
        raise InputError("data of the uploaded patient were staged into the project before under the keyed "
                         "pseudonym; one patient cannot have two identities in a project")
    try:
        with transaction.atomic():
            Subject.objects.filter(pk=subject.pk).update(patient=patient)
    except IntegrityError:
        raise InputError("the uploaded patient is enrolled as another subject of the project") from None
    subject.patient = patient


def _fitting_series(template_name: str, series_ids) -> list[int]:
    """The uploaded series the template can process (checked before anything is staged)."""
    from dicomflow.core.rules import template_problems
    from dicomflow.processing import services as processing

    template = processing.get_template(template_name)
    candidates = list(Series.objects.filter(pk__in=series_ids, project__isnull=True).order_by("pk")
                      .values_list("pk", flat=True))
    problems = {sid: template_problems(template.core(), processing.series_context(sid)) for sid in candidates}
    fitting = [sid for sid in candidates if not problems[sid]]
    if not fitting:
        why = "; ".join(sorted({p for found in problems.values() for p in found})[:5])
        raise InputError(f"no uploaded series fits template '{template_name}'" + (f" ({why})" if why else ""))
    return fitting


def _start_jobs(owner, project: Project, template_name: str, series_ids: list[int]) -> list[int]:
    """A processing job for each of these series, started once the transaction commits."""
    from dicomflow.processing import services as processing
    from dicomflow.processing import tasks

    jobs = []
    for sid in series_ids:
        job = processing.create_job(project_key=project.key, series_id=sid, template_name=template_name,
                                    created_by=owner)
        tasks.start_job(job.pk)
        jobs.append(job.pk)
    log.info("upload into %s: %d processing job(s) started", project.key, len(jobs))
    return jobs


def connect() -> None:
    from dicomflow.intake.signals import upload_imported

    upload_imported.connect(on_upload_imported, dispatch_uid="projects-upload-imported")
