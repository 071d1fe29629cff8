"""Serializers of the processing API: jobs, their actions, templates, rulesets, the rules' dry run
and the audit log. Shapes only; every write goes through ``dicomflow.processing.services``."""

from __future__ import annotations

from rest_framework import serializers

from dicomflow.api.serializers import ProgressField
from dicomflow.processing.models import JobStatus


# --- jobs -------------------------------------------------------------------------------------------------
class JobStageSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Stage: uploading, importing, checking, deidentifying, processing, "
                                           "verifying, reidentifying, quality_control, exporting.")
    status = serializers.CharField(help_text="pending, running, waiting, done, skipped, failed or cancelled.")
    done = serializers.IntegerField(help_text="Units of work done in this stage.")
    total = serializers.IntegerField(help_text="Units of work in this stage (0: not known yet).")
    error = serializers.CharField(allow_blank=True, help_text="Why the stage failed (no identifying values).")


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The job's number.")
    status = serializers.CharField(help_text="The CLI's job statuses: " + ", ".join(JobStatus.values) + ".")
    current_stage = serializers.CharField(source="stage", allow_blank=True,
                                          help_text="The stage running or waiting now (progress.stage).")
    progress = ProgressField()
    series_instance_uid = serializers.CharField(source="series.series_instance_uid", default=None, allow_null=True,
                                                help_text="The series processed (null until a folder is imported).")
    template = serializers.CharField(source="template.name", default=None, allow_null=True,
                                     help_text="The template's name (null: the rules choose at the checking stage).")
    project_key = serializers.CharField(help_text="The project whose keys de-identify the series.")
    require_qc = serializers.BooleanField(help_text="A person approves the result before it is exported.")
    error = serializers.CharField(allow_blank=True, help_text="Why the job failed (no identifying values).")
    created_at = serializers.DateTimeField(help_text="When the job was made.")
    started_at = serializers.DateTimeField(allow_null=True, help_text="When its first stage started.")
    finished_at = serializers.DateTimeField(allow_null=True, help_text="When it finished, failed or was cancelled.")


class JobDetailSerializer(JobSerializer):
    stages = JobStageSerializer(many=True, source="summary.stages", help_text="Every stage, in order.")
    results = serializers.ListField(child=serializers.CharField(), source="summary.results",
                                    help_text="Where the results are on the server (download them from results/).")
    overrides = serializers.SerializerMethodField(help_text="Blocking check findings let pass for this job.")

    def get_overrides(self, job) -> list[dict]:
        return [{"code": o.get("code", ""), "reason": o.get("reason", ""), "by": o.get("by", ""), "at": o.get("at", "")}
                for o in (job.state or {}).get("overrides", [])]


class LogEntrySerializer(serializers.Serializer):
    time = serializers.DateTimeField(help_text="When.")
    level = serializers.CharField(help_text="DEBUG, INFO, WARNING or ERROR.")
    stage = serializers.CharField(allow_blank=True, help_text="The stage that wrote it (empty: the job itself).")
    message = serializers.CharField(help_text="What happened (no identifying values).")


class JobCreateSerializer(serializers.Serializer):
    series_uid = serializers.CharField(required=False, max_length=64,
                                       help_text="A catalogued series to process (give this or study_uid).")
    study_uid = serializers.CharField(required=False, max_length=64,
                                      help_text="A catalogued study: every series of it the template (or the "
                                                "rules) fits gets a job; the answer is then a list.")
    template = serializers.CharField(required=False, allow_null=True, max_length=100,
                                     help_text="Template name; left out: the template the rules chose.")
    project = serializers.CharField(max_length=64, help_text="Key of the project whose keys de-identify the data "
                                                             "(you need the data-manager role in it).")
    require_qc = serializers.BooleanField(required=False, default=False,
                                          help_text="Wait for a person to approve the result before export.")

    def validate(self, data):
        if ("series_uid" in data) == ("study_uid" in data):
            raise serializers.ValidationError("give either series_uid or study_uid")
        return data


class JobRejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the result is rejected (required).")


class JobOverrideSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=64, help_text="The check finding's code, e.g. "
                                                          "COMPLETENESS_MISSING_SLICES.")
    reason = serializers.CharField(max_length=2000, help_text="Why the finding may pass (required; audited).")


# --- templates and rulesets -------------------------------------------------------------------------------------
class TemplateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Unique name; rulesets name templates by it.")
    definition = serializers.JSONField(help_text="The template: processor, parameters, requires, rois, "
                                                 "destinations, blocking_findings (check codes that stop processing).")
    auto_process = serializers.BooleanField(required=False, help_text="A rule match starts processing by itself "
                                                                      "(the automatic path).")
    auto_project = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                         help_text="Research project whose keys de-identify automatically processed "
                                                   "series (empty: the server's default project). Setting it needs "
                                                   "the data-manager role there.")
    builtin = serializers.BooleanField(read_only=True, help_text="Shipped with dicomflow (may be edited).")
    updated_at = serializers.DateTimeField(read_only=True, help_text="Last change.")


class TemplateUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=100, help_text="A new name.")
    definition = serializers.JSONField(required=False, help_text="The new definition (whole).")
    auto_process = serializers.BooleanField(required=False, help_text="Switch the automatic path on or off.")
    auto_project = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                         help_text="The project of the automatic path (data-manager role there).")


class RulesetSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Unique name.")
    definition = serializers.JSONField(help_text="The ruleset: match (rules with and/or) and the template name.")
    enabled = serializers.BooleanField(required=False, default=True, help_text="Disabled rulesets are not evaluated.")
    order = serializers.IntegerField(required=False, default=0, help_text="Evaluation and display order.")
    builtin = serializers.BooleanField(read_only=True, help_text="Shipped with dicomflow (may be edited).")
    updated_at = serializers.DateTimeField(read_only=True, help_text="Last change.")


class RulesetUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=100, help_text="A new name.")
    definition = serializers.JSONField(required=False, help_text="The new definition (whole).")
    enabled = serializers.BooleanField(required=False, help_text="Evaluate this ruleset or not.")
    order = serializers.IntegerField(required=False, help_text="Evaluation and display order.")


class DryRunRequestSerializer(serializers.Serializer):
    series_uid = serializers.CharField(max_length=64, help_text="A catalogued series you may see.")
    rulesets = serializers.ListField(child=serializers.JSONField(), required=False,
                                     help_text="Unsaved ruleset definitions to preview instead of the stored ones.")


class DryRunSerializer(serializers.Serializer):
    series_uid = serializers.CharField(help_text="The series evaluated.")
    status = serializers.CharField(help_text="RULE_MATCHED, RULE_NOT_MATCHED, MULTIPLE_RULES_MATCHED, ...")
    template = serializers.CharField(allow_null=True, help_text="The template the rules choose (null: none).")
    explanation = serializers.JSONField(help_text="Every clause on the actual values (identifying values masked "
                                                  "unless you may see the clinical pool).")


# --- audit log --------------------------------------------------------------------------------------------------
class AuditEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="When.")
    user = serializers.CharField(source="username", help_text="Who ('cli:<login>' for the command line).")
    action = serializers.CharField(help_text="What: export, result_download, reidentify, stage, override, "
                                             "qc_approve, qc_reject, role_change, login_failed, ...")
    project = serializers.CharField(allow_blank=True, help_text="The project's key.")
    object = serializers.CharField(allow_blank=True, help_text="The object, by kind and number ('job #12').")
    outcome = serializers.CharField(help_text="ok, denied or failed.")
    detail = serializers.CharField(allow_blank=True, help_text="What happened, in words (no identifying values).")
