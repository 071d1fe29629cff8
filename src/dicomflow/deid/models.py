"""De-identification records kept in the database: the re-identification audit trail.

Secrets (project keys) and the reverse map (pseudonym → identity, new UID → original) stay in the
file key store (``$DICOMFLOW_HOME/keys/projects/``, mode 600), outside database dumps; the per-job
de-identification record (tag, action, option — never values) is kept on the staging job.
"""

from django.conf import settings
from django.db import models


class ReidentificationAudit(models.Model):
    """Who re-identified what, when, in which project. Written for every attempt, refused ones too."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True, default="", help_text="Kept if the user is deleted.")
    project = models.ForeignKey("projects.Project", on_delete=models.PROTECT, related_name="reidentifications")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    what = models.CharField(max_length=512, help_text="What was asked for (paths or catalog series; no identities).")
    purpose = models.CharField(max_length=512, blank=True, default="")
    allowed = models.BooleanField()
    files_in = models.IntegerField(default=0)
    files_out = models.IntegerField(default=0)
    values_restored = models.IntegerField(default=0)
    sop_instance_uids = models.JSONField(default=list, blank=True,
                                         help_text="De-identified SOP Instance UIDs given (project UIDs).")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "re-identification audit entry"
        verbose_name_plural = "re-identification audit"

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "refused"
        return f"{self.username} {verdict} in {self.project_id} at {self.at:%Y-%m-%d %H:%M}"
