"""Notifications by e-mail: who is told when a long job fails (or finishes), and the store-full alarm.

Every kind of long job — processing jobs, ZIP uploads, resumable uploads, watched-folder intakes,
staging jobs — ends through :func:`dicomflow.progress.finish` / :func:`dicomflow.progress.fail`,
which send :data:`dicomflow.progress.long_job_ended` once per row after the ending commits. This
module listens once for all of them:

- **failed** → one mail to the data managers (and project administrators) of the job's project
  with an e-mail address, or — for work of no project (a ZIP upload, a watched folder) or a project
  without such members — to the administrators (``DICOMFLOW_ADMIN_EMAILS`` and active superusers);
- **finished** → the same people only when the project opted in (``Project.notify_on_success``);
- the job's log is attached as ``<kind>-<id>.log`` (the processing log of a processing job, its
  progress and counters otherwise). The body names the kind, the id, the status, the stage and the
  failure message — messages that by policy hold no identifying values — never file names, patient
  data or UIDs.

Mail goes through Django's mail framework (``EMAIL_*`` settings; console backend by default). A
mail that cannot be sent is logged and never fails the job. ``DICOMFLOW_NOTIFY=0`` turns it off.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage

from dicomflow.progress import Status, long_job_ended

log = logging.getLogger(__name__)

MANAGER_ROLES = ("data_manager", "project_admin")


def connect() -> None:
    long_job_ended.connect(on_long_job_ended, dispatch_uid="dicomflow.notifications.long_job_ended")
    from dicomflow.intake.diskcap import store_full

    store_full.connect(on_store_full, dispatch_uid="dicomflow.notifications.store_full")


def _project_of(job):
    """The research project a long job belongs to (None: the clinical side, e.g. a ZIP upload)."""
    from dicomflow.intake.models import UploadSession
    from dicomflow.processing.models import Job
    from dicomflow.projects.models import Project, ProjectUpload, StagingJob

    if isinstance(job, Job):
        return Project.objects.filter(key=job.project_key).first()
    if isinstance(job, StagingJob):
        return job.project
    if isinstance(job, UploadSession):
        link = ProjectUpload.objects.filter(session=job).select_related("project").first()
        return link.project if link else None
    return None


def admin_addresses() -> list[str]:
    users = get_user_model().objects.filter(is_superuser=True, is_active=True).exclude(email="")
    return sorted(set(settings.DICOMFLOW_ADMIN_EMAILS) | {u.email for u in users})


def manager_addresses(project) -> list[str]:
    return sorted({m.user.email for m in project.memberships.select_related("user").filter(
        role__in=MANAGER_ROLES, user__is_active=True).exclude(user__email="")})


def recipients(job, status: str) -> list[str]:
    """Who is told that ``job`` ended with ``status`` (empty: nobody)."""
    project = _project_of(job)
    if status == Status.FINISHED:
        return manager_addresses(project) if project is not None and project.notify_on_success else []
    managers = manager_addresses(project) if project is not None else []
    return managers or admin_addresses()


def job_log(job) -> str:
    """The log attached to the mail: no identifying values (processing-log messages hold none by policy)."""
    from dicomflow.processing.models import Job, LogEntry

    head = json.dumps({"kind": job.what, "id": str(job.pk), **job.progress_dict()}, indent=2)
    if isinstance(job, Job):
        lines = [f"{e.time.isoformat()} {e.level:<7} {e.stage or '-':<14} {e.message}"
                 for e in LogEntry.objects.filter(job_id=job.pk).order_by("time", "pk")]
        return head + "\n\n" + "\n".join(lines) + "\n"
    counters = {f.name: getattr(job, f.name) for f in job._meta.concrete_fields
                if f.get_internal_type() in ("IntegerField", "BigIntegerField") and f.name not in ("done", "total")}
    return head + "\n\ncounters: " + json.dumps(counters) + "\n"


def _link(job) -> str:
    from dicomflow.processing.models import Job

    return f"/jobs/{job.pk}/" if isinstance(job, Job) else ""


def compose(job, status: str, to: list[str]) -> EmailMessage:
    verb = "failed" if status == Status.FAILED else "finished"
    project = _project_of(job)
    subject = f"{settings.EMAIL_SUBJECT_PREFIX}{job.what} #{job.pk} {verb}"
    lines = [f"The {job.what} #{job.pk} {verb}.", "",
             f"Status: {job.get_status_display()}", f"Stage: {job.stage or '-'}"]
    if project is not None:
        lines.append(f"Project: {project.key}")
    if job.error:
        lines.append(f"Reason: {job.error}")
    if _link(job):
        lines.append(f"Details: {_link(job)}")
    lines += ["", "The log is attached. This mail holds no patient data; look the job up in dicomflow."]
    message = EmailMessage(subject=subject, body="\n".join(lines), from_email=settings.DEFAULT_FROM_EMAIL, to=to)
    kind = job._meta.model_name
    message.attach(f"{kind}-{job.pk}.log", job_log(job), "text/plain")
    return message


def notify(job, status: str) -> int:
    """Mail about ``job`` ending with ``status``; returns the number of mails sent (0 or 1)."""
    if not settings.DICOMFLOW_NOTIFY:
        return 0
    to = recipients(job, status)
    if not to:
        return 0
    try:
        return compose(job, status, to).send()
    except Exception as exc:  # a mail server that fails must not fail the work
        log.warning("notification about %s #%s not sent (%s)", job.what, job.pk, type(exc).__name__)
        return 0


def on_long_job_ended(sender, pk, status, **kwargs) -> None:
    job = sender.objects.filter(pk=pk).first()
    if job is not None:
        notify(job, status)


def on_store_full(sender, refused: int, reason: str, source: str = "", **kwargs) -> None:
    """The alarm of the store's disk cap (:mod:`dicomflow.intake.diskcap`): mail the administrators."""
    if not settings.DICOMFLOW_NOTIFY:
        return
    to = admin_addresses()
    if not to:
        return
    body = (f"An import ({source or 'unknown source'}) had {refused} file(s) refused because the store is full:\n\n"
            f"{reason}\n\nFree space (dicomflow retention run) or raise the limits, then import again.")
    try:
        EmailMessage(subject=f"{settings.EMAIL_SUBJECT_PREFIX}store full: {refused} file(s) refused", body=body,
                     from_email=settings.DEFAULT_FROM_EMAIL, to=to).send()
    except Exception as exc:
        log.warning("store-full alarm not mailed (%s)", type(exc).__name__)
