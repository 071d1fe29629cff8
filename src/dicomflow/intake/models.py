"""Intake records: one ImportRun per import, whatever its source."""

from django.db import models


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


class DicomNode(models.Model):
    """A remote DICOM application entity we send to (C-STORE) — export destinations, processors."""

    name = models.CharField(max_length=64, unique=True)
    ae_title = models.CharField(max_length=16)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    our_ae_title = models.CharField(max_length=16, default="DICOMFLOW", help_text="Calling AE title we use.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "DICOM node"

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"
