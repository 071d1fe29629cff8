"""The stored analysis in the admin, view only: RT references, check results, sanity results.

Rows are written by ``dicomflow.catalog.analysis`` (results by the analysis, overrides through
``override_sanity`` which demands a reason), never edited here. Review date/time and reviewer of
plans and structure sets are shown to superusers only.
"""

from __future__ import annotations

from django.contrib import admin

from dicomflow.catalog.admin import ViewOnlyAdmin, ViewOnlyInline
from dicomflow.catalog.models import (
    CheckFinding,
    InstanceRefRecord,
    SanityOverride,
    SanityResult,
    SeriesCheck,
    SeriesReference,
)

_REVIEW_FIELDS = ("review_date", "review_time", "reviewer_name")


class CheckFindingInline(ViewOnlyInline, admin.TabularInline):
    model = CheckFinding
    fields = ("severity", "code", "message")
    readonly_fields = fields
    show_change_link = False


@admin.register(SeriesCheck)
class SeriesCheckAdmin(ViewOnlyAdmin):
    project_path = "series__project"
    list_display = ("series", "modality", "complete", "worst_severity", "approval_status", "instances", "checked_at")
    list_filter = ("modality", "complete", "worst_severity", "approval_status")
    search_fields = ("series__series_instance_uid", "study__study_instance_uid")
    list_select_related = ("series",)
    inlines = [CheckFindingInline]

    def get_exclude(self, request, obj=None):
        return () if request.user.is_superuser else _REVIEW_FIELDS


@admin.register(CheckFinding)
class CheckFindingAdmin(ViewOnlyAdmin):
    project_path = "series__project"
    list_display = ("code", "severity", "series", "message")
    list_filter = ("severity", "code")
    search_fields = ("series__series_instance_uid", "code")
    list_select_related = ("series",)


@admin.register(SeriesReference)
class SeriesReferenceAdmin(ViewOnlyAdmin):
    project_path = "source__project"
    list_display = ("source", "target_uid", "via", "missing", "study")
    list_filter = ("missing", "via")
    search_fields = ("source__series_instance_uid", "target_uid", "study__study_instance_uid")
    list_select_related = ("source", "study")


class SanityOverrideInline(ViewOnlyInline, admin.TabularInline):
    model = SanityOverride
    fields = ("status", "reason", "username", "created_at")
    readonly_fields = fields
    show_change_link = False


@admin.register(SanityResult)
class SanityResultAdmin(ViewOnlyAdmin):
    project_path = "study__project"
    list_display = ("id", "patient", "study", "status", "expected_source", "checked_at")
    list_filter = ("status", "expected_source")
    search_fields = ("subject_ref", "study__study_instance_uid")
    inlines = [SanityOverrideInline]


@admin.register(InstanceRefRecord)
class InstanceRefRecordAdmin(ViewOnlyAdmin):
    project_path = "instance__series__project"
    list_display = ("instance", "study", "format_version", "created_at")
    search_fields = ("instance__sop_instance_uid",)
    list_select_related = ("instance", "study")

    def get_exclude(self, request, obj=None):
        # identifying header values (see the Patient row); the ref names the reviewer
        return ("patient",) if request.user.is_superuser else ("patient", "ref")
