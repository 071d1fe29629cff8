"""Intake reads for the web pages: who may use ZIP uploads and the datastore, and what they see.

ZIP uploads and watched folders fill the clinical pool, so only people who may see the clinical
pool (or hold the intake model permissions, or are superusers) work with them; a user sees their
own ZIP uploads, those with ``intake.view_zipupload`` see all.
"""

from __future__ import annotations

from django.db.models import QuerySet

from dicomflow.intake.models import FolderIntake, WatchedFolder, ZipUpload


def _active(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def _uploads_somewhere(user) -> bool:
    from dicomflow.projects.models import ROLE_CAPABILITIES, Capability, ProjectMembership

    roles = [role for role, caps in ROLE_CAPABILITIES.items() if Capability.UPLOAD in caps]
    return ProjectMembership.objects.filter(user=user, role__in=roles).exists()


def may_upload_zip(user) -> bool:
    """Superusers, holders of ``intake.add_zipupload``, and uploaders of a project who see the clinical pool."""
    from dicomflow.projects.selectors import can_see_clinical

    if not _active(user):
        return False
    return user.is_superuser or user.has_perm("intake.add_zipupload") or (
        can_see_clinical(user) and _uploads_somewhere(user))


def zip_uploads_for(user) -> QuerySet[ZipUpload]:
    """The ZIP uploads ``user`` sees: all with ``intake.view_zipupload``, else their own."""
    if not _active(user):
        return ZipUpload.objects.none()
    qs = ZipUpload.objects.select_related("uploaded_by", "import_run")
    if user.is_superuser or user.has_perm("intake.view_zipupload"):
        return qs
    return qs.filter(uploaded_by=user) if may_upload_zip(user) else ZipUpload.objects.none()


def may_view_datastore(user) -> bool:
    """Folder names and source paths often name patients: clinical-pool viewers who manage a project,
    holders of ``intake.view_watchedfolder`` and superusers."""
    from dicomflow.projects.models import ROLE_CAPABILITIES, Capability, ProjectMembership
    from dicomflow.projects.selectors import can_see_clinical

    if not _active(user):
        return False
    if user.is_superuser or user.has_perm("intake.view_watchedfolder"):
        return True
    roles = [role for role, caps in ROLE_CAPABILITIES.items() if Capability.MANAGE in caps]
    return can_see_clinical(user) and ProjectMembership.objects.filter(user=user, role__in=roles).exists()


def may_manage_watched_folders(user) -> bool:
    return _active(user) and (user.is_superuser or user.has_perm("intake.change_watchedfolder"))


def watched_folders() -> QuerySet[WatchedFolder]:
    return WatchedFolder.objects.order_by("name")


def folder_copies(*, watched_folder: int | None = None, status: str = "", search: str = "") -> QuerySet[FolderIntake]:
    """Every copy taken from a watched folder (source → copied folder, when, status, import), newest first."""
    qs = FolderIntake.objects.select_related("watched_folder", "import_run")
    if watched_folder:
        qs = qs.filter(watched_folder_id=watched_folder)
    if status:
        qs = qs.filter(status=status)
    if search := (search or "").strip():
        qs = qs.filter(source_path__icontains=search)
    return qs.order_by("-first_seen_at", "-id")
