"""Admin pages of research projects. Thin: every write goes through ``services`` (the same role checks
and audit entries as the web, the API and the CLI); what no service writes is shown read-only."""

from __future__ import annotations

import csv
import io
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.contrib.auth import get_user_model
from django.urls import path, reverse
from django.utils.html import format_html

from dicomflow.errors import DicomflowError, NotFoundError, PermissionDeniedError
from dicomflow.projects import selectors, services
from dicomflow.projects.models import (
    Event,
    Project,
    ProjectMembership,
    ProjectUpload,
    StagedSeries,
    StagingJob,
    Subject,
    UploadSlot,
    UploadSlotLink,
)

class ProjectScoped:
    """Rows of the projects ``request.user`` may see (members, superusers: ``selectors.projects_for``),
    the rule of the API and the web, whatever model permissions a staff user holds."""

    project_path = "project"  # from this model to its Project ("" for the Project itself)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        visible = selectors.projects_for(request.user).values("pk")
        return queryset.filter(**{f"{self.project_path}__in" if self.project_path else "pk__in": visible})


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["key", "name", "description", "options", "uid_root", "date_shift_min_days",
                  "date_shift_max_days", "allow_burned_in", "notify_on_success"]

    def clean(self):
        data = super().clean()
        probe = Project(**{k: v for k, v in data.items() if k in self.Meta.fields})
        try:
            probe.deid_options()
        except DicomflowError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class MembershipInline(admin.TabularInline):
    """Members are added, changed and removed with ``services.add_member``/``remove_member`` (audited)."""

    model = ProjectMembership
    extra = 1
    autocomplete_fields = ["user"]


class ServiceWrites:
    """Turns a service's refusal into a 403 page; its input errors were caught by the form."""

    @staticmethod
    def call(function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (PermissionDeniedError, NotFoundError) as exc:
            raise PermissionDenied(str(exc)) from None


@admin.register(Project)
class ProjectAdmin(ProjectScoped, admin.ModelAdmin):
    project_path = ""
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

    def save_formset(self, request, form, formset, change):
        if formset.model is not ProjectMembership:
            return super().save_formset(request, form, formset, change)
        project = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []  # for the admin's log
        for member_form in formset.forms:
            data = getattr(member_form, "cleaned_data", None) or {}
            if not data or not data.get("user"):
                continue
            try:
                if data.get("DELETE"):
                    if member_form.instance.pk:
                        services.remove_member(request.user, project, member_form.instance.user)
                elif member_form.has_changed():
                    previous = member_form.initial.get("user")
                    if member_form.instance.pk and previous and previous != data["user"].pk:
                        services.remove_member(request.user, project, get_user_model().objects.get(pk=previous))
                    services.add_member(request.user, project, data["user"], data["role"])
            except DicomflowError as exc:
                messages.error(request, f"member {data['user']}: {exc}")


class EventInline(ReadOnlyMixin, admin.TabularInline):
    model = Event
    extra = 0
    can_delete = False
    fields = ["name", "date", "order"]
    readonly_fields = fields


class SubjectForm(forms.ModelForm):
    """Enrolment runs every check of ``services.enrol_subject`` (for the admin user) before saving."""

    class Meta:
        model = Subject
        fields = ["project", "study_subject_id", "patient", "expected_sex", "expected_birth_date",
                  "expected_birth_year"]

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        if "study_subject_id" in self.fields:  # (a subject's own page is read-only: no fields)
            self.fields["study_subject_id"].required = False

    def clean(self):
        data = super().clean()
        if self.errors or self.request is None:
            return data
        try:
            services.check_enrolment(self.request.user, data["project"], data.get("study_subject_id") or None,
                                     data.get("patient"), data.get("expected_sex") or "",
                                     data.get("expected_birth_date"), data.get("expected_birth_year"))
        except (PermissionDeniedError, NotFoundError) as exc:
            raise PermissionDenied(str(exc)) from None
        except DicomflowError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data

    def validate_unique(self):
        pass  # check_enrolment says it in words


@admin.register(Subject)
class SubjectAdmin(ProjectScoped, admin.ModelAdmin):
    """Subjects are enrolled here with the service's checks; once enrolled they are read-only
    (their ID is in staged data)."""

    form = SubjectForm
    list_display = ["study_subject_id", "project", "pseudonym", "expected_sex", "expected_birth_year"]
    list_filter = ["project"]
    search_fields = ["study_subject_id", "pseudonym"]
    raw_id_fields = ["patient"]
    readonly_fields = ["pseudonym"]
    inlines = [EventInline]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class WithRequest(form):
            def __init__(self, *args, **kw):
                super().__init__(*args, request=request, **kw)

        return WithRequest

    def has_change_permission(self, request, obj=None):
        return False

    @staticmethod
    def may_see_identity(request, obj) -> bool:
        """Pseudonym ↔ clinical patient: Re-identifiers of the subject's project and superusers only."""
        user = request.user
        return bool(user.is_active and (user.is_superuser or selectors.can_reidentify(user, obj.project)))

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.may_see_identity(request, obj):
            fields = [f for f in fields if f != "patient"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and not self.may_see_identity(request, obj):
            readonly = [f for f in readonly if f != "patient"]
        return readonly

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        subject = ServiceWrites.call(
            services.enrol_subject, request.user, data["project"], data.get("study_subject_id") or None,
            data.get("patient"), data.get("expected_sex") or "", data.get("expected_birth_date"),
            data.get("expected_birth_year"))
        obj.pk, obj.pseudonym, obj.study_subject_id = subject.pk, subject.pseudonym, subject.study_subject_id


class UploadSlotInline(ReadOnlyMixin, admin.TabularInline):
    model = UploadSlot
    extra = 0
    can_delete = False
    fields = ["name", "study"]
    readonly_fields = fields


@admin.register(Event)
class EventAdmin(ProjectScoped, admin.ModelAdmin):
    project_path = "subject__project"
    """Events are added with ``services.add_event``; then read-only."""

    list_display = ["name", "subject", "date", "order"]
    list_filter = ["subject__project"]
    raw_id_fields = ["subject"]
    inlines = [UploadSlotInline]

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        event = ServiceWrites.call(services.add_event, request.user, obj.subject, obj.name, obj.date, obj.order)
        obj.pk = event.pk


class UploadSlotLinkInline(ReadOnlyMixin, admin.TabularInline):
    model = UploadSlotLink
    extra = 0
    fields = ["study_instance_uid", "linked_by", "linked_at", "replaced_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(UploadSlot)
class UploadSlotAdmin(ProjectScoped, admin.ModelAdmin):
    project_path = "event__subject__project"
    """Slots are added with ``services.add_slot``; studies are linked through ``services.link_study``
    (web, API, uploads), which asks before replacing and keeps the history shown here."""

    list_display = ["name", "event", "study"]
    list_filter = ["event__subject__project"]
    fields = ["event", "name", "study"]
    raw_id_fields = ["event"]
    readonly_fields = ["study"]
    inlines = [UploadSlotLinkInline]

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        slot = ServiceWrites.call(services.add_slot, request.user, obj.event, obj.name)
        obj.pk = slot.pk


@admin.register(StagingJob)
class StagingJobAdmin(ProjectScoped, ReadOnlyMixin, admin.ModelAdmin):
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
        job = get_object_or_404(self.get_queryset(request), pk=job_id)  # scoped to the user's projects
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
class StagedSeriesAdmin(ProjectScoped, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["project", "source_series", "copy_series", "source_instances", "updated_at"]
    list_filter = ["project"]


@admin.register(ProjectUpload)
class ProjectUploadAdmin(ProjectScoped, ReadOnlyMixin, admin.ModelAdmin):
    """Uploads made into a project (through the API, the SDK or the upload page): read-only."""

    list_display = ["session", "project", "subject", "slot", "template", "created_at"]
    list_filter = ["project"]
    readonly_fields = [f.name for f in ProjectUpload._meta.fields]
