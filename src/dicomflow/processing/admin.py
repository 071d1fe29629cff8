"""Admin: rulesets and templates (validated by the core on save), series states with a template
chosen by hand, jobs with retry / cancel / quality-control actions, and the searchable log.
Actions only call services (through ``tasks`` so the worker runs the stages)."""

from __future__ import annotations

from django.contrib import admin, messages

from dicomflow.errors import DicomflowError
from dicomflow.processing import tasks
from dicomflow.processing.models import Job, JobStage, LogEntry, Result, Ruleset, SeriesState, Template


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "builtin", "updated_at")
    search_fields = ("name",)


@admin.register(Ruleset)
class RulesetAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "order", "builtin", "updated_at")
    list_editable = ("enabled", "order")
    search_fields = ("name",)


@admin.register(SeriesState)
class SeriesStateAdmin(admin.ModelAdmin):
    list_display = ("series", "status", "template", "chosen_by", "evaluated_at")
    list_filter = ("status", "template")
    readonly_fields = ("series", "status", "explanation", "chosen_by", "evaluated_at")
    actions = ["evaluate"]

    @admin.action(description="Evaluate the rules again")
    def evaluate(self, request, queryset):
        ids = list(queryset.values_list("series_id", flat=True))
        tasks.evaluate_series.delay(ids, override_manual=True)
        self.message_user(request, f"rule evaluation queued for {len(ids)} series")

    def save_model(self, request, obj, form, change):
        """Choosing a template here is a manual choice: checked against the template's requirements."""
        from dicomflow.processing import services

        if "template" in form.changed_data and obj.template_id:
            try:
                services.choose_template(obj.series_id, obj.template.name, request.user)
            except DicomflowError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            return
        super().save_model(request, obj, form, change)


class JobStageInline(admin.TabularInline):
    model = JobStage
    extra = 0
    can_delete = False
    readonly_fields = ("name", "status", "done", "total", "attempts", "started_at", "finished_at", "error")
    fields = readonly_fields


class ResultInline(admin.TabularInline):
    model = Result
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "path", "verified", "reidentified", "exported_to")
    fields = readonly_fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "stage", "template", "project_key", "series", "created_at")
    list_filter = ("status", "stage", "template")
    search_fields = ("project_key", "error")
    readonly_fields = ("state", "error", "started_at", "finished_at", "created_by")
    inlines = [JobStageInline, ResultInline]
    actions = ["retry", "cancel", "approve", "reject", "download_results"]

    def _each(self, request, queryset, fn, verb):
        done = 0
        for job in queryset:
            try:
                fn(job.pk)
                done += 1
            except DicomflowError as exc:
                self.message_user(request, f"job #{job.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"{verb} {done} job(s)")

    @admin.action(description="Retry the failed stage")
    def retry(self, request, queryset):
        self._each(request, queryset, tasks.retry_job, "retried")

    @admin.action(description="Cancel")
    def cancel(self, request, queryset):
        from dicomflow.processing import services

        self._each(request, queryset, services.cancel_job, "cancelled")

    @admin.action(description="Quality control: approve the result")
    def approve(self, request, queryset):
        self._each(request, queryset, lambda pk: tasks.decide_quality_control(pk, True, request.user), "approved")

    @admin.action(description="Download the re-identified results (ZIP, one job)")
    def download_results(self, request, queryset):
        from django.http import FileResponse

        from dicomflow.processing import services

        if queryset.count() != 1:
            self.message_user(request, "choose exactly one job to download", messages.WARNING)
            return None
        job = queryset.get()
        try:
            path = services.job_results_zip(job.pk)
        except DicomflowError as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return None
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)

    @admin.action(description="Quality control: reject the result")
    def reject(self, request, queryset):
        self._each(request, queryset, lambda pk: tasks.decide_quality_control(pk, False, request.user), "rejected")


@admin.register(LogEntry)
class LogEntryAdmin(admin.ModelAdmin):
    list_display = ("time", "level", "job", "series", "stage", "message")
    list_filter = ("level", "stage", "job__status", "series__processing_state__status")
    search_fields = ("message",)
    readonly_fields = ("time", "level", "job", "series", "stage", "message")
    date_hierarchy = "time"

    def has_add_permission(self, request):
        return False
