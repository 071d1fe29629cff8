"""Admin: rulesets and templates (validated by the core and against the operator's registry,
written by the services), series states with a template chosen by hand, jobs (added, retried,
cancelled, approved and downloaded through the services, as request.user) and the searchable log.
Nothing here writes those models itself.

Series states, jobs and log entries are scoped by the visibility rule of API and web (the series a
user may see, the jobs of their projects); actions declare the model permission they need (write
actions: change; the download: view — the service then checks the role and audits)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from dicomflow.errors import DicomflowError
from dicomflow.processing import services, tasks
from dicomflow.processing.models import Job, JobStage, LogEntry, Result, Ruleset, SeriesState, Template


class DefinitionAdmin(admin.ModelAdmin):
    """Saves and deletes through the services (permission-checked; the core validates definitions)."""

    kind = ""  # "template" or "ruleset"
    fields_to_save: tuple[str, ...] = ("definition",)

    def save_model(self, request, obj, form, change):
        values = {f: getattr(obj, f) for f in self.fields_to_save}
        if change:
            old_name = type(obj).objects.get(pk=obj.pk).name
            row = getattr(services, f"update_{self.kind}")(request.user, old_name, new_name=obj.name, **values)
        else:
            row = getattr(services, f"create_{self.kind}")(request.user, name=obj.name, **values)
        obj.pk = row.pk

    def delete_model(self, request, obj):
        getattr(services, f"delete_{self.kind}")(request.user, obj.name)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            try:
                self.delete_model(request, obj)
            except DicomflowError as exc:
                self.message_user(request, str(exc), messages.ERROR)


@admin.register(Template)
class TemplateAdmin(DefinitionAdmin):
    kind = "template"
    fields_to_save = ("definition", "auto_process", "auto_project")
    list_display = ("name", "auto_process", "auto_project", "builtin", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("builtin", "auto_since")

    def get_deleted_objects(self, objs, request):
        """A template a ruleset names is protected like one a job uses: the admin refuses to delete it."""
        from dicomflow.processing.selectors import rulesets_naming

        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        named = [f"Ruleset: {name} (chooses template '{obj.name}')"
                 for obj in objs for name in rulesets_naming(obj.name)]
        return deleted, counts, perms_needed, [*protected, *named]


@admin.register(Ruleset)
class RulesetAdmin(DefinitionAdmin):
    kind = "ruleset"
    fields_to_save = ("definition", "enabled", "order")
    list_display = ("name", "enabled", "order", "builtin", "updated_at")
    list_editable = ("enabled", "order")
    search_fields = ("name",)
    readonly_fields = ("builtin",)


@admin.register(SeriesState)
class SeriesStateAdmin(admin.ModelAdmin):
    list_display = ("series", "status", "template", "chosen_by", "evaluated_at")
    list_filter = ("status", "template")
    readonly_fields = ("series", "status", "explanation", "chosen_by", "evaluated_at")
    actions = ["evaluate"]

    def get_queryset(self, request):
        from dicomflow.projects.selectors import visible_series

        return super().get_queryset(request).filter(series__in=visible_series(request.user).values("pk"))

    @admin.action(description="Evaluate the rules again", permissions=["change"])
    def evaluate(self, request, queryset):
        ids = list(queryset.values_list("series_id", flat=True))
        tasks.evaluate_series.delay(ids, override_manual=True)
        self.message_user(request, f"rule evaluation queued for {len(ids)} series")

    def save_model(self, request, obj, form, change):
        """Choosing a template here is a manual choice: checked against the template's requirements."""
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

    def has_add_permission(self, request, obj=None):
        return False


class ResultInline(admin.TabularInline):
    model = Result
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "path", "verified", "reidentified", "exported_to")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


class JobAddForm(forms.ModelForm):
    """"Add job" sends a catalogued series (or a folder) through the services, so the job has its
    stages and is enqueued; a refusal (permission, template, rules) shows as a form error."""

    actor = None  # the request's user, set by JobAdmin.get_form

    class Meta:
        model = Job
        fields = ["series", "input_path", "template", "project_key", "require_qc", "out_dir"]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        template = data["template"].name if data.get("template") else None
        common = {"project_key": data["project_key"], "template_name": template,
                  "out_dir": data.get("out_dir") or None, "require_qc": data.get("require_qc", False)}
        try:
            if data.get("series") and data.get("input_path"):
                raise forms.ValidationError("give a catalogued series or a folder, not both")
            if data.get("series"):
                [self.created_job] = services.send_for_processing(
                    self.actor, series_uids=[data["series"].series_instance_uid], **common)
            elif data.get("input_path"):
                self.created_job = services.process_folder(self.actor, path=data["input_path"], **common)
            else:
                raise forms.ValidationError("choose a catalogued series or give a folder to import")
        except DicomflowError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "stage", "template", "project_key", "series", "created_at")
    list_filter = ("status", "stage", "template", "automatic")
    search_fields = ("project_key", "error")
    raw_id_fields = ("series",)
    inlines = [JobStageInline, ResultInline]
    actions = ["retry", "cancel", "approve", "download_results"]

    def get_queryset(self, request):
        from dicomflow.processing.selectors import visible_jobs

        return super().get_queryset(request).filter(pk__in=visible_jobs(request.user).values("pk"))

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = type("JobAddFormFor", (JobAddForm,), {"actor": request.user})
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return JobAddForm.Meta.fields if obj is None else [f.name for f in Job._meta.fields if f.name != "id"]

    def get_readonly_fields(self, request, obj=None):
        """A job changes only through its actions (the services): every field is read-only."""
        return [] if obj is None else [f.name for f in Job._meta.fields if f.name != "id"]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_model(self, request, obj, form, change):
        if not change:  # the service made it (JobAddForm.clean)
            obj.pk = form.created_job.pk
            obj.refresh_from_db()

    def _each(self, request, queryset, fn, verb):
        done = 0
        for job in queryset:
            try:
                fn(request.user, job.pk)
                done += 1
            except DicomflowError as exc:
                self.message_user(request, f"job #{job.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"{verb} {done} job(s)")

    @admin.action(description="Retry the failed stage", permissions=["change"])
    def retry(self, request, queryset):
        self._each(request, queryset, services.retry_job, "retried")

    @admin.action(description="Cancel", permissions=["change"])
    def cancel(self, request, queryset):
        self._each(request, queryset, services.cancel_job, "cancelled")

    @admin.action(description="Quality control: approve the result", permissions=["change"])
    def approve(self, request, queryset):
        self._each(request, queryset, services.approve_qc, "approved")

    @admin.action(description="Download the re-identified results (ZIP, one job)", permissions=["view"])
    def download_results(self, request, queryset):
        from django.http import FileResponse

        if queryset.count() != 1:
            self.message_user(request, "choose exactly one job to download", messages.WARNING)
            return None
        job = queryset.get()
        try:
            path = services.download_results(request.user, job.pk)
        except DicomflowError as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return None
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)


@admin.register(LogEntry)
class LogEntryAdmin(admin.ModelAdmin):
    list_display = ("time", "level", "job", "series", "stage", "message")
    list_filter = ("level", "stage", "job__status", "series__processing_state__status")
    search_fields = ("message",)
    readonly_fields = ("time", "level", "job", "series", "stage", "message")
    date_hierarchy = "time"

    def get_queryset(self, request):
        from django.db.models import Q

        from dicomflow.processing.selectors import visible_jobs
        from dicomflow.projects.selectors import visible_series

        jobs = visible_jobs(request.user).values("pk")
        series = visible_series(request.user).values("pk")
        allowed = Q(job__in=jobs) | Q(job__isnull=True, series__in=series)
        if request.user.is_active and request.user.is_superuser:
            allowed |= Q(job__isnull=True, series__isnull=True)  # the scheduler's own entries
        return super().get_queryset(request).filter(allowed)

    def has_add_permission(self, request):
        return False
