"""Intake records: one ImportRun per import, whatever its source."""

from django.db import models

from dicomflow.progress import RunStatus


class SourceKind(models.TextChoices):
    CLI = "cli", "Command line"
    ZIP_UPLOAD = "zip_upload", "ZIP upload"
    BROWSER_UPLOAD = "browser_upload", "Browser upload"
    API_UPLOAD = "api_upload", "REST/SDK upload"
    WATCHED_FOLDER = "watched_folder", "Watched folder"
    DICOM = "dicom", "DICOM C-STORE"


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
UploadStatus = RunStatus  # the shared vocabulary of long jobs (dicomflow.progress)


class UploadStage(models.TextChoices):
    """The stages a ZIP upload goes through, in order; ``percent`` is overall progress."""

    WAITING = "waiting", "Waiting"
    INITIALISE = "initialise", "Initialise"
    EXTRACT = "extract", "Extract"
    IMPORT = "import", "Import"
    CLEAN_UP = "clean_up", "Clean up"
    FINALISE = "finalise", "Finalise"
    DONE = "done", "Done"


class ZipUpload(models.Model):
    """A ZIP uploaded through the admin and imported by a Celery task (``dicomflow.intake.uploads``).

    Status moves Pending → In progress → Completed | Failed; only the task that wins the
    conditional update Pending → In progress processes it, so a re-delivered task does no harm.
    """

    file = models.FileField(upload_to="zip_uploads/%Y/%m/%d/", help_text="A ZIP of DICOM files (many patients allowed).")
    original_name = models.CharField(max_length=255, blank=True, default="")
    size = models.BigIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="zip_uploads"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=UploadStatus.choices, default=UploadStatus.PENDING, db_index=True)
    stage = models.CharField(max_length=16, choices=UploadStage.choices, default=UploadStage.WAITING)
    percent = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    import_run = models.ForeignKey(ImportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    files_seen = models.IntegerField(default=0)
    instances_new = models.IntegerField(default=0)
    instances_duplicate = models.IntegerField(default=0)
    conflicts_count = models.IntegerField(default=0)
    ignored_count = models.IntegerField(default=0)
    patients = models.IntegerField(default=0)
    studies = models.IntegerField(default=0)
    series = models.IntegerField(default=0)
    error_message = models.TextField(blank=True, default="")

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


class FolderIntakeStatus(models.TextChoices):
    WAITING = "waiting", "Waiting until stable"
    COPYING = "copying", "Copying"
    COPIED = "copied", "Copied, import queued"
    IMPORTING = "importing", "Importing"
    IMPORTED = "imported", "Imported"
    FAILED = "failed", "Failed"


class FolderIntake(models.Model):
    """One sub-folder of a watched folder: seen → (stable) → copied → imported. Never taken twice.

    The unique (watched folder, folder name) pair means a folder has one row for ever; the claim
    is a conditional update ``WAITING → COPYING`` that exactly one worker can win.
    """

    watched_folder = models.ForeignKey(WatchedFolder, on_delete=models.CASCADE, related_name="intakes")
    folder_name = models.CharField(max_length=255)
    source_path = models.CharField(max_length=1024)
    status = models.CharField(
        max_length=16, choices=FolderIntakeStatus.choices, default=FolderIntakeStatus.WAITING, db_index=True
    )
    signature = models.CharField(max_length=128, blank=True, default="", help_text="files:bytes:newest mtime")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    signature_since = models.DateTimeField(null=True, blank=True, help_text="When the current signature was first seen.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    copy_path = models.CharField(max_length=1024, blank=True, default="")
    copied_at = models.DateTimeField(null=True, blank=True)
    files_copied = models.IntegerField(default=0)
    bytes_copied = models.BigIntegerField(default=0)
    import_run = models.ForeignKey(ImportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    imported_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["watched_folder", "folder_name"], name="uniq_watched_folder_intake")
        ]

    def __str__(self) -> str:
        return f"{self.watched_folder.name}/{self.folder_name}"



# --- resumable uploads (REST/SDK and browser folder upload) ----------------------------------------
class UploadSessionStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    QUEUED = "queued", "Queued for import"
    IMPORTING = "importing", "Importing"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class UploadSession(models.Model):
    """One resumable upload: a batch of declared files sent in chunks, then imported as one ImportRun.

    The protocol is in ``dicomflow.intake.resumable``; the bytes live in
    ``$DICOMFLOW_HOME/uploads/sessions/<id>/`` until the import has taken them.
    """

    id = models.UUIDField(primary_key=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="upload_sessions"
    )
    source_kind = models.CharField(max_length=32, choices=SourceKind.choices, default=SourceKind.API_UPLOAD)
    status = models.CharField(
        max_length=16, choices=UploadSessionStatus.choices, default=UploadSessionStatus.RECEIVING, db_index=True
    )
    file_count = models.IntegerField(default=0)
    files_complete = models.IntegerField(default=0)
    total_size = models.BigIntegerField(default=0)
    received_size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    import_done = models.IntegerField(default=0, help_text="Files imported so far (ZIP members count).")
    import_total = models.IntegerField(default=0, help_text="Files to import (ZIP members counted).")
    import_run = models.ForeignKey(ImportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    result = models.JSONField(null=True, blank=True, help_text="The import report (CLI contract shape).")
    error_message = models.TextField(blank=True, default="")

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
