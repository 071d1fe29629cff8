"""Admin pages of intake: ZIP uploads (upload, Process now, bulk action), watched folders, import runs.

Thin: every action calls a service in ``uploads`` / ``watch`` or queues a task.
"""

from __future__ import annotations

import os
import zipfile

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from dicomflow.catalog import visibility
from dicomflow.intake import uploads, watch
from dicomflow.intake.models import (
    FolderIntake,
    FolderIntakeStatus,
    ImportRun,
    IntakeFilter,
    UploadStatus,
    WatchedFolder,
    ZipUpload,
)

class ClinicalPoolAdmin(admin.ModelAdmin):
    """Imports feed the clinical pool: their rows are shown to those who may see it (the visibility
    rule of API and web, :mod:`dicomflow.catalog.visibility`), whatever model permissions staff hold."""

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if visibility.sees_clinical(request.user) else queryset.none()


class ZipUploadForm(forms.ModelForm):
    class Meta:
        model = ZipUpload
        fields = ["file"]

    def clean_file(self):
        f = self.cleaned_data["file"]
        if f and not zipfile.is_zipfile(f):
            raise forms.ValidationError("This file is not a ZIP archive. Upload a .zip of DICOM files.")
        if f:
            f.seek(0)
        return f


@admin.register(ZipUpload)
class ZipUploadAdmin(ClinicalPoolAdmin):
    form = ZipUploadForm
    list_display = ["id", "name", "status_badge", "stage_progress", "row_actions", "summary", "uploaded"]
    list_display_links = ["id", "name"]
    list_filter = ["status", "uploaded_at"]
    search_fields = ["original_name"]
    actions = ["process_selected", "abandon_selected"]
    readonly_fields = [
        "original_name", "size", "uploaded_by", "uploaded_at", "status", "stage", "done", "total", "task_id",
        "started_at", "finished_at", "import_run", "files_seen", "instances_new", "instances_duplicate",
        "conflicts_count", "ignored_count", "patients", "studies", "series", "error", "links",
    ]

    def get_fields(self, request, obj=None):
        return ["file"] if obj is None else ["file", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["file", *self.readonly_fields]

    def has_change_permission(self, request, obj=None):
        return False if obj is not None and obj.status == UploadStatus.RUNNING else super().has_change_permission(
            request, obj
        )

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is not None:
            return form
        user = request.user

        class QuotaCheckedForm(form):  # the upload quotas and free-space check (intake.resumable.check_room)
            def clean_file(self):
                from django.core.exceptions import ValidationError

                from dicomflow.errors import UploadError
                from dicomflow.intake.resumable import check_room

                f = super().clean_file()  # a ZIP archive first
                if f is not None:
                    try:
                        check_room(int(getattr(f, "size", 0) or 0), user)
                    except UploadError as exc:
                        raise ValidationError(str(exc)) from None
                return f

        return QuotaCheckedForm

    def save_model(self, request, obj, form, change):
        if not change:
            f = form.cleaned_data["file"]
            obj.original_name = os.path.basename(f.name)[:255]
            obj.size = f.size or 0
            obj.uploaded_by = request.user
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request, f"Uploaded {obj.original_name}. Press “Process now” to import it.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:intake_zipupload_changelist"))

    @admin.display(description="file", ordering="original_name")
    def name(self, obj):
        return obj.original_name or os.path.basename(obj.file.name)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return obj.status_badge()

    @admin.display(description="progress")
    def stage_progress(self, obj):
        return format_html(
            '<progress max="100" value="{}" style="width:6em"></progress> {}% <small>{}</small>',
            obj.percent, obj.percent, obj.get_stage_display(),
        )

    @admin.display(description="uploaded", ordering="uploaded_at")
    def uploaded(self, obj):
        return format_html(
            '<span style="white-space:nowrap">{}</span><br><small>{}</small>',
            timezone.localtime(obj.uploaded_at).strftime("%Y-%m-%d %H:%M"), obj.uploaded_by or "",
        )

    @admin.display(description="result")
    def summary(self, obj):
        if obj.status != UploadStatus.FINISHED:
            return "-"
        return format_html(
            '<span style="white-space:nowrap">{} new · {} duplicate</span><br>'
            '<span style="white-space:nowrap">{} conflicts · {} ignored</span>',
            obj.instances_new, obj.instances_duplicate, obj.conflicts_count, obj.ignored_count,
        )

    @admin.display(description="")
    def row_actions(self, obj):
        view = reverse("intake:upload-progress", args=[obj.pk])
        if obj.status in (UploadStatus.PENDING, UploadStatus.FAILED):
            url = reverse("admin:intake_zipupload_process", args=[obj.pk])
            # formaction posts the change list form (it carries the CSRF token) to our view.
            return format_html(
                '<button type="submit" class="button" formaction="{}" formmethod="post" '
                'name="process_now" value="{}">Process now</button> <a href="{}">details</a>',
                url, obj.pk, view,
            )
        return format_html('<a href="{}">{}</a>', view, "progress" if obj.status == UploadStatus.RUNNING else "result")

    @admin.display(description="pages")
    def links(self, obj):
        return format_html(
            '<a href="{}">progress</a> · <a href="{}">result</a> · <a href="{}">error</a>',
            reverse("intake:upload-progress", args=[obj.pk]),
            reverse("intake:upload-result", args=[obj.pk]),
            reverse("intake:upload-error", args=[obj.pk]),
        )

    @admin.action(description="Process selected ZIP uploads now", permissions=["change"])
    def process_selected(self, request, queryset):
        with transaction.atomic():
            queued = uploads.request_processing(list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - len(queued)
        self.message_user(request, f"Queued {len(queued)} upload(s) for processing.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} upload(s) already in progress or completed.", messages.INFO)

    @admin.action(description="Mark selected stuck uploads (worker lost) as failed", permissions=["change"])
    def abandon_selected(self, request, queryset):
        n = uploads.abandon(queryset.values_list("pk", flat=True))
        self.message_user(request, f"Marked {n} in-progress upload(s) as failed; process them again.", messages.SUCCESS)

    def delete_model(self, request, obj):
        uploads.delete_uploads([obj])

    def delete_queryset(self, request, queryset):
        kept = queryset.count() - uploads.delete_uploads(queryset)
        if kept:
            self.message_user(request, f"Kept {kept} upload(s) that are in progress.", messages.WARNING)

    def get_urls(self):
        custom = [
            path(
                "<int:pk>/process/",
                self.admin_site.admin_view(self.process_now_view),
                name="intake_zipupload_process",
            )
        ]
        return custom + super().get_urls()

    def process_now_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("intake.change_zipupload"):
            raise PermissionDenied("you may not process ZIP uploads")
        with transaction.atomic():
            queued = uploads.request_processing([pk])
        if not queued:
            self.message_user(request, "This upload is already in progress or completed.", messages.WARNING)
        return HttpResponseRedirect(reverse("intake:upload-progress", args=[pk]))


class FolderIntakeInline(admin.TabularInline):
    model = FolderIntake
    fields = ["folder_name", "status", "stage", "first_seen_at", "copied_at", "copy_path", "finished_at", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WatchedFolder)
class WatchedFolderAdmin(ClinicalPoolAdmin):
    """Which server folders are read into the catalog: configured by superusers only (like the
    operator's registry), looked at and scanned by staff with the permissions."""

    list_display = ["name", "path", "enabled", "stable_minutes", "intake_filter", "last_scan_at", "last_scan_error",
                    "taken"]
    list_filter = ["enabled"]
    search_fields = ["name", "path"]
    readonly_fields = ["created_at", "last_scan_at", "last_scan_error"]
    inlines = [FolderIntakeInline]
    actions = ["scan_now"]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # nothing to list before the folder exists

    def has_add_permission(self, request):
        return bool(request.user.is_active and request.user.is_superuser)

    def has_change_permission(self, request, obj=None):
        return bool(request.user.is_active and request.user.is_superuser)

    def has_delete_permission(self, request, obj=None):
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.display(description="folders taken")
    def taken(self, obj):
        return obj.intakes.exclude(status=FolderIntakeStatus.WAITING).count()

    @admin.action(description="Scan watched folders now", permissions=["change"])
    def scan_now(self, request, queryset):
        from dicomflow.intake.tasks import scan_watched_folders

        transaction.on_commit(scan_watched_folders.delay)
        self.message_user(request, "A scan of all enabled watched folders was queued.", messages.SUCCESS)


@admin.register(FolderIntake)
class FolderIntakeAdmin(ClinicalPoolAdmin):
    list_display = [
        "folder_name", "watched_folder", "status", "stage", "first_seen_at", "claimed_by", "copied_at", "copy_path",
        "files_copied", "finished_at", "import_run",
    ]
    list_filter = ["status", "watched_folder"]
    search_fields = ["folder_name", "copy_path"]
    actions = ["retry_import"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in FolderIntake._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Retry the selected failed or stuck folders", permissions=["change"])
    def retry_import(self, request, queryset):
        from dicomflow.intake.tasks import import_watched_folder

        ids = watch.retry(queryset.values_list("pk", flat=True))
        for i in ids:
            transaction.on_commit(lambda i=i: import_watched_folder.delay(i))
        self.message_user(
            request, f"Queued {len(ids)} import(s); folders without a complete copy wait for the next scan.",
            messages.SUCCESS,
        )


@admin.register(ImportRun)
class ImportRunAdmin(ClinicalPoolAdmin):
    list_display = [
        "id", "source_kind", "source", "started_at", "finished_at", "files_seen", "instances_new",
        "instances_duplicate", "n_conflicts", "n_ignored",
    ]
    list_filter = ["source_kind", "started_at"]
    search_fields = ["source"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ImportRun._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="conflicts")
    def n_conflicts(self, obj):
        return len(obj.conflicts or [])

    @admin.display(description="ignored")
    def n_ignored(self, obj):
        return len(obj.ignored or [])


@admin.register(IntakeFilter)
class IntakeFilterAdmin(admin.ModelAdmin):
    """Named intake filters: used by watched folders, DICOM nodes (Q/R pulls) and the receiver
    (``DICOMFLOW_SCP_INTAKE_FILTER``)."""

    list_display = ["name", "pull_start", "study_date_from", "study_date_to", "excluded_series"]
    search_fields = ["name"]
