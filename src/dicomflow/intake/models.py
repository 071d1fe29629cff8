"""Intake records: one ImportRun per import, whatever its source."""

from django.db import models

from dicomflow.progress import LongJob, Status, stage_field, stages, status_field


class SourceKind(models.TextChoices):
    CLI = "cli", "Command line"
    ZIP_UPLOAD = "zip_upload", "ZIP upload"
    BROWSER_UPLOAD = "browser_upload", "Browser upload"
    API_UPLOAD = "api_upload", "REST/SDK upload"
    WATCHED_FOLDER = "watched_folder", "Watched folder"
    DICOM = "dicom", "DICOM C-STORE"
    DICOMWEB = "dicomweb", "DICOMweb STOW-RS"
    QUERY_RETRIEVE = "query_retrieve", "DICOM Query/Retrieve (C-GET)"


class ImportRun(models.Model):
    """What one import saw and did: the same counters the CLI prints (no identifying values)."""

    source_kind = models.CharField(max_length=32, choices=SourceKind.choices)
    source = models.CharField(max_length=1024, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    files_seen = models.IntegerField(default=0)
    instances_new = models.IntegerField(default=0)
    instances_duplicate = models.IntegerField(default=0)
    conflicts = models.JSONField(default=list, blank=True)
    ignored = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.get_source_kind_display()} {self.source} ({self.started_at:%Y-%m-%d %H:%M})"


from django.conf import settings  # noqa: E402  (used by the models below)


# --- ZIP uploads (admin) ----------------------------------------------------------------------------
UploadStatus = Status  # the one vocabulary of long jobs (dicomflow.progress)


# The stages a ZIP upload goes through, in order (``ZipUpload.stage_spans``: their share of the bar).
UploadStage = stages("UploadStage", ("initialise", "Initialise"), ("extract", "Extract"), ("import", "Import"),
                     ("clean_up", "Clean up"), ("finalise", "Finalise"), module=__name__)


class ZipUpload(LongJob):
    """A ZIP uploaded through the admin and imported by a Celery task (``dicomflow.intake.uploads``).

    Status moves Pending → In progress → Completed | Failed (the labels of running and finished);
    only the task that wins the conditional update pending → running processes it, so a re-delivered
    task does no harm.
    """

    what = "ZIP upload"
    resume_task = "dicomflow.intake.tasks.process_zip_upload"  # sent again when its worker died (progress.recover_abandoned)
    stage_spans = {  # one bar over the stages (see ``dicomflow.intake.uploads``)
        UploadStage.INITIALISE: (0, 5),
        UploadStage.EXTRACT: (5, 10),
        UploadStage.IMPORT: (10, 90),
        UploadStage.CLEAN_UP: (90, 95),
        UploadStage.FINALISE: (95, 100),
    }

    file = models.FileField(upload_to="zip_uploads/%Y/%m/%d/", help_text="A ZIP of DICOM files (many patients allowed).")
    original_name = models.CharField(max_length=255, blank=True, default="")
    size = models.BigIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="zip_uploads"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)
    status = status_field(running="In progress", finished="Completed")
    stage = stage_field(UploadStage, default=UploadStage.WAITING)
    task_id = models.CharField(max_length=64, blank=True, default="")
    import_run = models.ForeignKey(ImportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    files_seen = models.IntegerField(default=0)
    instances_new = models.IntegerField(default=0)
    instances_duplicate = models.IntegerField(default=0)
    conflicts_count = models.IntegerField(default=0)
    ignored_count = models.IntegerField(default=0)
    patients = models.IntegerField(default=0)
    studies = models.IntegerField(default=0)
    series = models.IntegerField(default=0)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        verbose_name = "ZIP upload"

    def __str__(self) -> str:
        return f"{self.original_name or self.file.name} ({self.get_status_display()})"


# --- watched datastore folders ---------------------------------------------------------------------
def default_stable_minutes() -> float:
    return settings.DICOMFLOW_WATCH_STABLE_MINUTES


class WatchedFolder(models.Model):
    """A configured source path; every new sub-folder of it is copied and imported once it is quiet."""

    name = models.SlugField(max_length=64, unique=True)
    path = models.CharField(max_length=1024, help_text="Absolute path of the folder to watch.")
    enabled = models.BooleanField(default=True)
    stable_minutes = models.FloatField(
        default=default_stable_minutes,
        help_text="A sub-folder is taken once nothing in it has changed for this many minutes.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_scan_at = models.DateTimeField(null=True, blank=True)
    last_scan_error = models.TextField(blank=True, default="")
    intake_filter = models.ForeignKey(
        "intake.IntakeFilter", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Intake filter of this folder (empty: the default — localizers and scouts kept out of processing).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """An absolute, existing folder outside $DICOMFLOW_HOME (watching our own datastore would loop)."""
        import os
        from pathlib import Path

        from django.core.exceptions import ValidationError

        if not os.path.isabs(self.path):
            raise ValidationError({"path": "Give an absolute path (starting with /)."})
        if not os.path.isdir(self.path):
            raise ValidationError({"path": "No folder exists at this path (or it cannot be read)."})
        real, home = Path(os.path.realpath(self.path)), Path(os.path.realpath(settings.HOME))
        if real == home or home in real.parents or real in home.parents:
            raise ValidationError({"path": "This folder overlaps the dicomflow data folder ($DICOMFLOW_HOME)."})
        if self.stable_minutes is not None and self.stable_minutes < 0:
            raise ValidationError({"stable_minutes": "Must be zero or more minutes."})


FolderIntakeStatus = Status  # the one vocabulary of long jobs (dicomflow.progress)


FolderIntakeStage = stages("FolderIntakeStage", ("copy", "Copy into the datastore"), ("import", "Import"),
                           bookends=False, module=__name__)


class FolderIntake(LongJob):
    """One sub-folder of a watched folder: seen → (stable) → copied → imported. Never taken twice.

    Waiting (until stable) → running (stage copy) → pending (stage import: queued) → running →
    finished. The unique (watched folder, folder name) pair means a folder has one row for ever; the
    claim is a conditional update waiting → running that exactly one worker can win.
    ``started_at`` is when the current step (copy, then import) began, ``finished_at`` when the
    import ended.
    """

    what = "watched-folder intake"
    resume_task = "dicomflow.intake.tasks.import_watched_folder"  # sent again when its worker died (progress.recover_abandoned)

    watched_folder = models.ForeignKey(WatchedFolder, on_delete=models.CASCADE, related_name="intakes")
    folder_name = models.CharField(max_length=255)
    source_path = models.CharField(max_length=1024)
    status = status_field(default=Status.WAITING, waiting="Waiting until stable", pending="Import queued",
                          running="In progress", finished="Imported")
    stage = stage_field(FolderIntakeStage)
    signature = models.CharField(max_length=128, blank=True, default="", help_text="files:bytes:newest mtime")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    signature_since = models.DateTimeField(null=True, blank=True, help_text="When the current signature was first seen.")
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    copy_path = models.CharField(max_length=1024, blank=True, default="")
    copied_at = models.DateTimeField(null=True, blank=True)
    files_copied = models.IntegerField(default=0)
    bytes_copied = models.BigIntegerField(default=0)
    import_run = models.ForeignKey(ImportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["watched_folder", "folder_name"], name="uniq_watched_folder_intake")
        ]

    def __str__(self) -> str:
        return f"{self.watched_folder.name}/{self.folder_name}"



# --- resumable uploads (REST/SDK and browser folder upload) ----------------------------------------
UploadSessionStatus = Status  # the one vocabulary of long jobs (dicomflow.progress)


UploadSessionStage = stages("UploadSessionStage", ("receive", "Receive the files"), ("import", "Import"),
                            bookends=False, module=__name__)


class UploadSession(LongJob):
    """One resumable upload: a batch of declared files sent in chunks, then imported as one ImportRun.

    Waiting (for the client's bytes, stage receive) → pending (queued, stage import) → running →
    finished | failed; or cancelled while waiting. During the import ``done``/``total`` count files
    (ZIP members count).

    The protocol is in ``dicomflow.intake.resumable``; the bytes live in
    ``$DICOMFLOW_HOME/uploads/sessions/<id>/`` until the import has taken them.
    """

    what = "upload"
    resume_task = "dicomflow.intake.tasks.import_upload_session"  # sent again when its worker died (progress.recover_abandoned)

    id = models.UUIDField(primary_key=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="upload_sessions"
    )
    source_kind = models.CharField(max_length=32, choices=SourceKind.choices, default=SourceKind.API_UPLOAD)
    status = status_field(default=Status.WAITING, waiting="Receiving", pending="Queued for import",
                          running="Importing", finished="Completed")
    stage = stage_field(UploadSessionStage, default=UploadSessionStage.RECEIVE)
    file_count = models.IntegerField(default=0)
    files_complete = models.IntegerField(default=0)
    total_size = models.BigIntegerField(default=0)
    received_size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    import_run = models.ForeignKey(ImportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    result = models.JSONField(null=True, blank=True, help_text="The import report (CLI contract shape).")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"upload session {self.pk} ({self.get_status_display()})"


class UploadFile(models.Model):
    """One declared file of an upload session; ``received`` is the offset the next chunk must start at."""

    session = models.ForeignKey(UploadSession, on_delete=models.CASCADE, related_name="upload_files")
    index = models.IntegerField()
    name = models.CharField(max_length=1024, help_text="The client's (relative) file name, for reports.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True, default="", help_text="Declared by the client, or computed.")
    sha256_declared = models.BooleanField(default=False)
    received = models.BigIntegerField(default=0)
    complete = models.BooleanField(default=False)

    class Meta:
        ordering = ["session_id", "index"]
        constraints = [models.UniqueConstraint(fields=["session", "index"], name="uniq_upload_file_index")]


# --- intake filters (per watched folder, per receiver, per Q/R node or pull) ------------------------
class ExcludedSeries(models.TextChoices):
    CATALOGUE = "catalogue", "Catalogue, but keep out of processing"
    DROP = "drop", "Drop (not catalogued)"


class IntakeFilter(models.Model):
    """A named intake filter (``dicomflow.core.intake_filter``): which instances a source takes and
    which series stay out of processing. Sources without one use the built-in default: localizers
    and scouts catalogued but kept out of processing, nothing dropped."""

    name = models.SlugField(max_length=64, unique=True)
    pull_start = models.DateTimeField(
        null=True, blank=True, help_text="Drop instances of studies that took place before this date-time.")
    study_date_from = models.DateField(null=True, blank=True, help_text="Drop studies dated before this day.")
    study_date_to = models.DateField(null=True, blank=True, help_text="Drop studies dated after this day.")
    exclude_descriptions = models.TextField(
        blank=True, default="\n".join(("*localizer*", "*localiser*", "*scout*", "*topogram*", "*surview*",
                                       "*scanogram*")),
        help_text="Series Description patterns (one per line; * and ? wildcards; case is ignored).")
    exclude_image_types = models.TextField(
        blank=True, default="LOCALIZER", help_text="Image Type value patterns (one per line), e.g. LOCALIZER.")
    excluded_series = models.CharField(max_length=16, choices=ExcludedSeries.choices,
                                       default=ExcludedSeries.CATALOGUE)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.study_date_from and self.study_date_to and self.study_date_from > self.study_date_to:
            raise ValidationError({"study_date_to": "The window ends before it starts."})

    def core(self):
        """This filter as :class:`dicomflow.core.intake_filter.IntakeFilter`."""
        from django.utils import timezone

        from dicomflow.core.intake_filter import IntakeFilter as CoreFilter

        pull_start = self.pull_start
        if pull_start is not None and timezone.is_aware(pull_start):
            pull_start = timezone.make_naive(pull_start)  # DICOM date-times are local, without a zone
        return CoreFilter(pull_start=pull_start, study_date_from=self.study_date_from,
                          study_date_to=self.study_date_to, exclude_descriptions=self.exclude_descriptions,
                          exclude_image_types=self.exclude_image_types, excluded_series=self.excluded_series,
                          name=self.name)

