"""Intake reads for the web pages: who may use ZIP uploads and the datastore, and what they see.

ZIP uploads and watched folders fill the clinical pool, so they are for people who may see the
clinical pool (the ``projects.view_clinical_pool`` permission; intake sits below projects and names
the permission, not the app), holders of the intake model permissions and superusers. A user sees
their own ZIP uploads; those with ``intake.view_zipupload`` see all.
"""

from __future__ import annotations

from django.db.models import QuerySet

from dicomflow.accounts.actors import is_active_user

from dicomflow.intake.models import FolderIntake, WatchedFolder, ZipUpload

CLINICAL_POOL_PERMISSION = "projects.view_clinical_pool"



def may_upload_zip(user) -> bool:
    """Superusers, holders of ``intake.add_zipupload``, and people who may see the clinical pool."""
    return is_active_user(user) and (user.has_perm("intake.add_zipupload") or user.has_perm(CLINICAL_POOL_PERMISSION))


def may_see_zip_uploads(user) -> bool:
    """Who the ZIP uploads page is for: uploaders, and holders of ``intake.view_zipupload``."""
    return may_upload_zip(user) or (is_active_user(user) and user.has_perm("intake.view_zipupload"))


def zip_uploads_for(user) -> QuerySet[ZipUpload]:
    """The ZIP uploads ``user`` sees: all with ``intake.view_zipupload``, else their own."""
    if not is_active_user(user):
        return ZipUpload.objects.none()
    qs = ZipUpload.objects.select_related("uploaded_by", "import_run")
    if user.has_perm("intake.view_zipupload"):
        return qs
    return qs.filter(uploaded_by=user) if may_upload_zip(user) else ZipUpload.objects.none()


def may_view_datastore(user) -> bool:
    """Folder names and source paths often name patients: people who may see the clinical pool,
    holders of ``intake.view_watchedfolder`` and superusers."""
    return is_active_user(user) and (user.has_perm("intake.view_watchedfolder") or user.has_perm(CLINICAL_POOL_PERMISSION))


def may_manage_watched_folders(user) -> bool:
    return is_active_user(user) and user.has_perm("intake.change_watchedfolder")


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
