"""Research projects (the RadPlanBio model): project, members, subjects, events, upload slots, staging.

All imported data forms the clinical pool ("Study0": catalog rows whose ``project`` is null).
Staging creates a project's de-identified copy of chosen clinical series; the copy lives in the
same catalog with ``project`` set, so per-project access is one filter (see ``selectors``).

The project's SECRET key is not here: it lives in the file key store under
``$DICOMFLOW_HOME/keys/projects/`` (``dicomflow.core.deid.KeyStore``), shared with ``dicomflow deid``
so the same KEY gives the same pseudonyms and UIDs from the CLI and from staging.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from dicomflow.core.deid.options import DEFAULT_OPTIONS, Options
from dicomflow.progress import LongJob, Status, stage_field, stages, status_field

# The key store's rule for project keys (file names): letters, digits, '_', '.', '-'.
PROJECT_KEY_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1-64 characters A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit.",
)
# Options that have their own columns; the JSON holds the profile flags and the rest.
OWN_COLUMNS = ("uid_root", "date_shift_days", "allow_burned_in")


def default_profile_options() -> dict:
    """Basic Profile + Retain Longitudinal Temporal Information (Modified Dates) + Clean Descriptors."""
    data = DEFAULT_OPTIONS.to_dict()
    for name in OWN_COLUMNS:
        data.pop(name, None)
    return data


class Project(models.Model):
    key = models.CharField(max_length=64, unique=True, validators=[PROJECT_KEY_VALIDATOR],
                           help_text="Short stable key; names the project's secret in the key store.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    options = models.JSONField(default=default_profile_options, blank=True,
                               help_text="PS3.15 profile options (dicomflow.core.deid.Options fields).")
    uid_root = models.CharField(max_length=40, blank=True, default="",
                                help_text="Root of new UIDs; empty gives 2.25.<int>.")
    date_shift_min_days = models.IntegerField(default=DEFAULT_OPTIONS.date_shift_days[0])
    date_shift_max_days = models.IntegerField(default=DEFAULT_OPTIONS.date_shift_days[1])
    allow_burned_in = models.BooleanField(
        default=False, help_text="Release images with burned-in annotation instead of quarantining them."
    )
    notify_on_success = models.BooleanField(
        default=False, help_text="Mail the project's data managers when a job, upload or staging of the project "
                                 "finishes, not only when one fails.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        permissions = [("view_clinical_pool", "Can see the clinical pool (Study0) and stage from it")]

    def __str__(self) -> str:
        return f"{self.key} ({self.name})"

    def deid_options(self) -> Options:
        """The engine's options: the profile JSON plus the UID root, date-shift range and burned-in flag."""
        data = {k: v for k, v in (self.options or {}).items() if k not in OWN_COLUMNS}
        data["uid_root"] = self.uid_root or None
        data["date_shift_days"] = (self.date_shift_min_days, self.date_shift_max_days)
        data["allow_burned_in"] = self.allow_burned_in
        return Options.from_dict(data)


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    UPLOADER = "uploader", "Uploader"
    DATA_MANAGER = "data_manager", "Data manager"
    REIDENTIFIER = "reidentifier", "Re-identifier"
    PROJECT_ADMIN = "project_admin", "Project administrator"


class Capability(models.TextChoices):
    """What a role lets a member do in their project (``ROLE_CAPABILITIES``)."""

    VIEW = "view", "see the project's data"
    UPLOAD = "upload", "upload into the project"
    MANAGE = "manage", "manage subjects, staging, processing and QC"
    REIDENTIFY = "reidentify", "re-identify and download identifying data"
    ADMINISTER = "administer", "manage the project's members"


ROLE_CAPABILITIES: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset({Capability.VIEW}),
    Role.UPLOADER: frozenset({Capability.VIEW, Capability.UPLOAD}),
    Role.DATA_MANAGER: frozenset({Capability.VIEW, Capability.UPLOAD, Capability.MANAGE}),
    Role.REIDENTIFIER: frozenset({Capability.VIEW, Capability.UPLOAD, Capability.MANAGE, Capability.REIDENTIFY}),
    Role.PROJECT_ADMIN: frozenset({Capability.VIEW, Capability.UPLOAD, Capability.MANAGE, Capability.ADMINISTER}),
}


class ProjectMembership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="uniq_project_member")]
        ordering = ["project_id", "user_id"]

    def __str__(self) -> str:
        return f"{self.user} in {self.project.key} ({self.get_role_display()})"

    def can(self, capability: str) -> bool:
        return capability in ROLE_CAPABILITIES.get(self.role, frozenset())

    @property
    def can_reidentify(self) -> bool:
        return self.can(Capability.REIDENTIFY)

    @property
    def can_stage(self) -> bool:
        return self.can(Capability.MANAGE)


class Sex(models.TextChoices):
    FEMALE = "F", "Female"
    MALE = "M", "Male"
    OTHER = "O", "Other"
    UNKNOWN = "", "Unknown"


class Subject(models.Model):
    """A patient enrolled in a project. Staged copies carry ``study_subject_id`` as Patient ID/Name."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="subjects")
    study_subject_id = models.CharField(max_length=64)
    pseudonym = models.CharField(max_length=64, blank=True, default="",
                                 help_text="The keyed pseudonym of the clinical patient in this project.")
    patient = models.ForeignKey("catalog.Patient", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="enrolments", help_text="The clinical patient (Study0).")
    expected_sex = models.CharField(max_length=1, choices=Sex.choices, blank=True, default="")
    expected_birth_date = models.DateField(null=True, blank=True)
    expected_birth_year = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "study_subject_id"], name="uniq_subject_id"),
            models.UniqueConstraint(fields=["project", "patient"], name="uniq_subject_patient"),
        ]
        ordering = ["project_id", "study_subject_id"]

    def __str__(self) -> str:
        return f"{self.study_subject_id} ({self.project.key})"


class Event(models.Model):
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="events")
    name = models.CharField(max_length=100)
    date = models.DateField(null=True, blank=True)
    order = models.IntegerField(default=0)

    class Meta:
        ordering = ["subject_id", "order", "date", "id"]
        constraints = [models.UniqueConstraint(fields=["subject", "name"], name="uniq_event_name")]

    def __str__(self) -> str:
        return f"{self.subject.study_subject_id} / {self.name}"


class UploadSlot(models.Model):
    """The item of an event a DICOM study (a project copy) is linked to."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="slots")
    name = models.CharField(max_length=100)
    study = models.ForeignKey("catalog.Study", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="upload_slots")

    class Meta:
        ordering = ["event_id", "name"]
        constraints = [models.UniqueConstraint(fields=["event", "name"], name="uniq_slot_name")]

    def __str__(self) -> str:
        return f"{self.event} / {self.name}"


class UploadSlotLink(models.Model):
    """History of a slot: every study ever linked, when, by whom, and when it was replaced."""

    slot = models.ForeignKey(UploadSlot, on_delete=models.CASCADE, related_name="links")
    study = models.ForeignKey("catalog.Study", null=True, on_delete=models.SET_NULL, related_name="+")
    study_instance_uid = models.CharField(max_length=64)
    linked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    linked_at = models.DateTimeField(auto_now_add=True)
    replaced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["slot_id", "linked_at", "id"]


StagingStatus = Status  # the one vocabulary of long jobs (dicomflow.progress)


StagingStage = stages("StagingStage", ("select", "Select (RT closure)"), ("deidentify", "De-identify"),
                      ("import", "Import into the project"), ("finalise", "Finalise"), module=__name__)


class StagingJob(LongJob):
    """One staging of clinical series into a project; progress is (stage, done, total)."""

    what = "staging"
    resume_task = "dicomflow.projects.tasks.run_staging"  # sent again when its worker died (progress.recover_abandoned)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="staging_jobs")
    source_study = models.ForeignKey("catalog.Study", on_delete=models.CASCADE, related_name="staging_jobs")
    requested_series = models.JSONField(default=list, help_text="Series UIDs asked for.")
    selected_series = models.JSONField(default=list, help_text="Requested series and all they reference.")
    status = status_field(running="In progress", finished="Completed")
    stage = stage_field(StagingStage, default=StagingStage.WAITING)
    files_in = models.IntegerField(default=0)
    files_out = models.IntegerField(default=0)
    instances_new = models.IntegerField(default=0)
    instances_duplicate = models.IntegerField(default=0)
    failed = models.JSONField(default=list, blank=True, help_text="[{path, reason}] (no values)")
    quarantined = models.JSONField(default=list, blank=True, help_text="[{path, reason}]")
    leak_findings = models.IntegerField(default=0)
    deid_record = models.JSONField(default=list, blank=True, help_text="[{tag, keyword, action, option}]")
    rt_integrity = models.JSONField(default=dict, blank=True)
    task_id = models.CharField(max_length=64, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"staging #{self.pk} into {self.project.key}: {self.get_status_display()}"

    def as_dict(self) -> dict:
        """What ``dicomflow stage --json`` prints and the API would serve."""
        return {
            "job": self.pk,
            "project": self.project.key,
            "status": self.status,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "requested_series": self.requested_series,
            "selected_series": self.selected_series,
            "files_in": self.files_in,
            "files_out": self.files_out,
            "instances_new": self.instances_new,
            "instances_duplicate": self.instances_duplicate,
            "failed": self.failed,
            "quarantined": self.quarantined,
            "leak_scan": {"findings": self.leak_findings},
            "error": self.error,
        }


class StagedSeries(models.Model):
    """A clinical series and its de-identified copy in a project (what none/partly/fully counts)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="staged_series")
    source_series = models.ForeignKey("catalog.Series", on_delete=models.CASCADE, related_name="staged_copies")
    copy_series = models.ForeignKey("catalog.Series", null=True, on_delete=models.SET_NULL, related_name="+")
    job = models.ForeignKey(StagingJob, null=True, on_delete=models.SET_NULL, related_name="staged_series")
    source_instances = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "staged series"
        constraints = [models.UniqueConstraint(fields=["project", "source_series"], name="uniq_staged_series")]


class ProjectUpload(models.Model):
    """A resumable upload made into a project: where its data go and what the import started.

    Filled when the upload is created (project, slot, template) and when its import finishes
    (the staged copies of the uploaded studies, the processing jobs the template started).
    """

    session = models.OneToOneField("intake.UploadSession", on_delete=models.CASCADE, related_name="project_upload")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="uploads")
    subject = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    slot = models.ForeignKey(UploadSlot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    template = models.CharField(max_length=100, blank=True, default="",
                                help_text="Processing template to run on the uploaded series after the import.")
    staged_studies = models.JSONField(default=list, blank=True,
                                      help_text="Study UIDs of the project's copies of the uploaded studies.")
    jobs = models.JSONField(default=list, blank=True, help_text="Processing job ids the template started.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"upload {self.session_id} into {self.project.key}"
