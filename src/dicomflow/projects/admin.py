"""Admin pages of research projects. Thin: writes that touch the key store go through ``services``."""

from __future__ import annotations

import csv
import io
import json

from django import forms
from django.contrib import admin
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from dicomflow.errors import DicomflowError
from dicomflow.projects import services
from dicomflow.projects.models import (
    Event,
    Project,
    ProjectMembership,
    StagedSeries,
    StagingJob,
    Subject,
    UploadSlot,
    UploadSlotLink,
)

class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["key", "name", "description", "options", "uid_root", "date_shift_min_days",
                  "date_shift_max_days", "allow_burned_in"]

    def clean(self):
        data = super().clean()
        probe = Project(**{k: v for k, v in data.items() if k in self.Meta.fields})
        try:
            probe.deid_options()
        except DicomflowError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class MembershipInline(admin.TabularInline):
    model = ProjectMembership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectForm
    list_display = ["key", "name", "member_count", "subject_count", "created_at"]
    search_fields = ["key", "name"]
    inlines = [MembershipInline]

    def get_readonly_fields(self, request, obj=None):
        return ["key"] if obj else []  # the key names the secret in the key store

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.memberships.count()

    @admin.display(description="subjects")
    def subject_count(self, obj):
        return obj.subjects.count()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        services.sync_key_store(obj)  # the key on first save; options shared with `dicomflow deid`


class EventInline(admin.TabularInline):
    model = Event
    extra = 0


@admin.register(Subject)
class SubjectAdmin(admin.ModelAdmin):
    list_display = ["study_subject_id", "project", "pseudonym", "expected_sex", "expected_birth_year"]
    list_filter = ["project"]
    search_fields = ["study_subject_id", "pseudonym"]
    raw_id_fields = ["patient"]
    readonly_fields = ["pseudonym"]
    inlines = [EventInline]


class UploadSlotInline(admin.TabularInline):
    model = UploadSlot
    extra = 0
    raw_id_fields = ["study"]
    readonly_fields = ["study"]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["name", "subject", "date", "order"]
    list_filter = ["subject__project"]
    inlines = [UploadSlotInline]


class UploadSlotLinkInline(ReadOnlyMixin, admin.TabularInline):
    model = UploadSlotLink
    extra = 0
    fields = ["study_instance_uid", "linked_by", "linked_at", "replaced_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(UploadSlot)
class UploadSlotAdmin(admin.ModelAdmin):
    list_display = ["name", "event", "study"]
    list_filter = ["event__subject__project"]
    raw_id_fields = ["study"]
    readonly_fields = ["study"]  # linked through services.link_study, which keeps the history
    inlines = [UploadSlotLinkInline]


@admin.register(StagingJob)
class StagingJobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "project", "status_badge", "stage", "progress", "files_out", "created_by", "created_at"]
    list_filter = ["status", "project"]
    readonly_fields = ["record_downloads"] + [f.name for f in StagingJob._meta.fields]

    def get_urls(self):
        view = self.admin_site.admin_view(self.record_view)
        return [path("<int:job_id>/record.<str:fmt>", view, name="projects_stagingjob_record")] + super().get_urls()

    def record_view(self, request, job_id: int, fmt: str):
        """The job's de-identification record (tag, keyword, action, option — never values)."""
        if not self.has_view_permission(request):
            raise Http404
        job = get_object_or_404(StagingJob, pk=job_id)
        if fmt == "json":
            body = json.dumps({"record": job.deid_record, "rt_integrity": job.rt_integrity}, indent=1)
            content_type = "application/json"
        elif fmt == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["tag", "keyword", "action", "option"])
            writer.writeheader()
            writer.writerows(job.deid_record)
            body, content_type = buffer.getvalue(), "text/csv"
        else:
            raise Http404
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="staging-{job.pk}-deid-record.{fmt}"'
        return response

    @admin.display(description="de-identification record")
    def record_downloads(self, obj):
        url = reverse("admin:projects_stagingjob_record", args=[obj.pk, "csv"])
        return format_html('<a href="{}">CSV</a> · <a href="{}">JSON</a>', url, url[:-3] + "json")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return obj.status_badge()

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.done}/{obj.total} ({obj.percent} %)"


@admin.register(StagedSeries)
class StagedSeriesAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["project", "source_series", "copy_series", "source_instances", "updated_at"]
    list_filter = ["project"]
