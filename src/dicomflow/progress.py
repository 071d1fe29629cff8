"""Statuses shared by the long jobs users start and watch (ZIP uploads, staging).

One vocabulary, so the admin, the API and the CLI read them the same way; each job keeps its own
stage enum, since the stages differ.
"""

from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
