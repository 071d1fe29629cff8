"""API keys (stored hashed by djangorestframework-api-key) and the append-only audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiKey(AbstractAPIKey):
    """A user's key for ``X-Api-Key``: only a prefix and a hash are kept; the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"


class AuditAction(models.TextChoices):
    """What the audit log records: actions that expose or move identifying data, and access changes."""

    EXPORT = "export", "Export"
    RESULT_DOWNLOAD = "result_download", "Result download"
    SERIES_DOWNLOAD = "series_download", "Series download"
    REIDENTIFY = "reidentify", "Re-identification"
    STAGE = "stage", "Staging"
    OVERRIDE = "override", "Override"
    QC_APPROVE = "qc_approve", "QC approved"
    QC_REJECT = "qc_reject", "QC rejected"
    ROLE_CHANGE = "role_change", "Role change"
    LOGIN_FAILED = "login_failed", "Failed login"
    API_KEY = "api_key", "API key"
    SLOT_LINK = "slot_link", "Slot link"
    WADO_RETRIEVE = "wado_retrieve", "DICOMweb retrieve"
    RETENTION = "retention", "Retention"
    AUTO_PROCESS = "auto_process", "Automatic processing"
    QR_FIND = "qr_find", "Query of a DICOM node (C-FIND)"
    QR_RETRIEVE = "qr_retrieve", "Retrieve from a DICOM node (C-GET/C-MOVE)"
    QR_SERVE = "qr_serve", "Query/retrieve by a DICOM peer"


class AuditOutcome(models.TextChoices):
    OK = "ok", "Done"
    DENIED = "denied", "Denied"
    FAILED = "failed", "Failed"


class AuditEntry(models.Model):
    """One audited action. Append-only: rows are never changed or deleted by the product.

    ``object`` names the object by kind and database id ("job #12", "series #5"); ``detail`` says
    what happened in words. Neither ever holds identifying values (names, IDs, dates, UIDs of
    clinical data).
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    username = models.CharField(max_length=160, help_text="Who acted; 'cli:<login>' for the command line.")
    action = models.CharField(max_length=24, choices=AuditAction.choices, db_index=True)
    project = models.CharField(max_length=64, blank=True, default="", db_index=True, help_text="Project key.")
    object = models.CharField(max_length=200, blank=True, default="")
    outcome = models.CharField(max_length=8, choices=AuditOutcome.choices, default=AuditOutcome.OK)
    detail = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.object} ({self.outcome})"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit entries are append-only")

    def as_dict(self) -> dict:
        """The API's and the CLI's form."""
        return {"at": self.at.isoformat(), "user": self.username, "action": self.action, "project": self.project,
                "object": self.object, "outcome": self.outcome, "detail": self.detail}
