"""Catalog in the admin: the first thing users see. View only — the catalog is written by the import
service (``dicomflow.intake.services``), never by hand, so rows and stored files stay consistent.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from dicomflow.catalog import visibility
from dicomflow.catalog.models import (
    ROI,
    ImageInformation,
    Instance,
    InstanceConflict,
    Patient,
    RTDose,
    RTImage,
    RTPlan,
    RTStructureSet,
    Series,
    Study,
)


class ViewOnlyAdmin(admin.ModelAdmin):
    """Browse and search; no add, change or delete (files in the store would fall out of step).

    Rows are scoped by the one visibility rule of API and web (:mod:`dicomflow.catalog.visibility`,
    installed by the projects app): staff see the clinical pool only with its permission and a
    project's copy only as its members, whatever model permissions they hold."""

    list_per_page = 50
    project_path = "project"  # from this model to the catalog row's project (null = clinical pool)

    def get_queryset(self, request):
        return visibility.scoped(super().get_queryset(request), request.user, self.project_path)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ViewOnlyInline:
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _uid(value: str):
    """UIDs are long: small, breakable, last column — searchable all the same."""
    return format_html('<code style="font-size:11px;word-break:break-all;max-width:16em;display:inline-block">{}</code>', value)


def _link(obj, label=None):
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


class StudyInline(ViewOnlyInline, admin.TabularInline):
    model = Study
    fields = ["study_instance_uid", "study_date", "description", "accession_number"]


class SeriesInline(ViewOnlyInline, admin.TabularInline):
    model = Series
    fields = ["series_number", "modality", "description", "series_instance_uid", "series_date"]


class ImageInformationInline(ViewOnlyInline, admin.StackedInline):
    model = ImageInformation
    show_change_link = False


class RTStructureSetInline(ViewOnlyInline, admin.StackedInline):
    model = RTStructureSet


class RTPlanInline(ViewOnlyInline, admin.StackedInline):
    model = RTPlan
    show_change_link = False


class RTDoseInline(ViewOnlyInline, admin.StackedInline):
    model = RTDose
    show_change_link = False


class RTImageInline(ViewOnlyInline, admin.StackedInline):
    model = RTImage
    show_change_link = False


class ROIInline(ViewOnlyInline, admin.TabularInline):
    model = ROI
    show_change_link = False
    fields = ["number", "name", "interpreted_type", "color", "contour_count", "referenced_frame_of_reference_uid"]


class ConflictInline(ViewOnlyInline, admin.TabularInline):
    model = InstanceConflict
    show_change_link = False


@admin.register(Patient)
class PatientAdmin(ViewOnlyAdmin):
    list_display = ["patient_id", "patient_name", "sex", "birth_date", "n_studies", "created_at"]
    search_fields = ["patient_id", "patient_name"]
    list_filter = ["sex", "created_at"]
    inlines = [StudyInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_n_studies=Count("studies"))

    @admin.display(description="studies", ordering="_n_studies")
    def n_studies(self, obj):
        return obj._n_studies


@admin.register(Study)
class StudyAdmin(ViewOnlyAdmin):
    list_display = ["study_label", "patient_link", "study_date", "accession_number", "n_series", "uid"]
    list_display_links = ["study_label"]
    search_fields = [
        "study_instance_uid", "accession_number", "description", "patient__patient_id", "patient__patient_name",
    ]
    list_filter = ["study_date", "series__modality"]
    date_hierarchy = "study_date"
    list_select_related = ["patient"]
    inlines = [SeriesInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_n_series=Count("series", distinct=True))

    @admin.display(description="study", ordering="description")
    def study_label(self, obj):
        return obj.description or "(no description)"

    @admin.display(description="Study Instance UID", ordering="study_instance_uid")
    def uid(self, obj):
        return _uid(obj.study_instance_uid)

    @admin.display(description="patient", ordering="patient__patient_id")
    def patient_link(self, obj):
        return _link(obj.patient)

    @admin.display(description="series", ordering="_n_series")
    def n_series(self, obj):
        return obj._n_series


@admin.register(Series)
class SeriesAdmin(ViewOnlyAdmin):
    list_display = [
        "series_label", "modality", "series_number", "patient_link", "study_link", "series_date", "n_instances", "uid",
    ]
    list_display_links = ["series_label"]
    search_fields = [
        "series_instance_uid", "description", "frame_of_reference_uid", "study__study_instance_uid",
        "study__patient__patient_id", "study__patient__patient_name",
    ]
    list_filter = ["modality", "series_date", "created_at"]
    list_select_related = ["study__patient"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_n_instances=Count("instances"))

    @admin.display(description="instances", ordering="_n_instances")
    def n_instances(self, obj):
        return obj._n_instances

    @admin.display(description="series", ordering="description")
    def series_label(self, obj):
        return obj.description or f"{obj.modality} series"

    @admin.display(description="Series Instance UID", ordering="series_instance_uid")
    def uid(self, obj):
        return _uid(obj.series_instance_uid)

    @admin.display(description="patient", ordering="study__patient__patient_id")
    def patient_link(self, obj):
        return _link(obj.study.patient)

    @admin.display(description="study")
    def study_link(self, obj):
        return _link(obj.study, obj.study.study_date or "study")


@admin.register(Instance)
class InstanceAdmin(ViewOnlyAdmin):
    project_path = "series__project"
    list_display = ["instance_label", "modality", "series_link", "size", "received_from", "received_at", "uid"]
    list_display_links = ["instance_label"]
    search_fields = [
        "sop_instance_uid", "sha256", "series__series_instance_uid", "series__study__study_instance_uid",
        "series__study__patient__patient_id", "series__study__patient__patient_name",
    ]
    list_filter = ["series__modality", "received_at"]
    list_select_related = ["series"]
    show_full_result_count = False
    inlines = [ImageInformationInline, RTStructureSetInline, RTPlanInline, RTDoseInline, RTImageInline, ConflictInline]

    @admin.display(description="instance", ordering="instance_number")
    def instance_label(self, obj):
        from pydicom.uid import UID

        name = UID(obj.sop_class_uid).name if obj.sop_class_uid else "instance"
        return f"{name.removesuffix(' Storage')} #{obj.instance_number}" if obj.instance_number is not None else name

    @admin.display(description="modality", ordering="series__modality")
    def modality(self, obj):
        return obj.series.modality

    @admin.display(description="series")
    def series_link(self, obj):
        return _link(obj.series, obj.series.description or obj.series.modality)

    @admin.display(description="SOP Instance UID", ordering="sop_instance_uid")
    def uid(self, obj):
        return _uid(obj.sop_instance_uid)


@admin.register(RTStructureSet)
class RTStructureSetAdmin(ViewOnlyAdmin):
    project_path = "instance__series__project"
    list_display = ["label", "name", "approval_status", "structure_set_date", "referenced_series_uid", "n_rois"]
    search_fields = ["label", "name", "instance__sop_instance_uid", "referenced_series_uid", "rois__name"]
    list_filter = ["approval_status"]
    inlines = [ROIInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_n_rois=Count("rois"))

    @admin.display(description="ROIs", ordering="_n_rois")
    def n_rois(self, obj):
        return obj._n_rois


@admin.register(RTPlan)
class RTPlanAdmin(ViewOnlyAdmin):
    project_path = "instance__series__project"
    list_display = ["label", "name", "approval_status", "fractions_planned", "beam_count", "referenced_structure_set_uid"]
    search_fields = ["label", "name", "instance__sop_instance_uid", "referenced_structure_set_uid"]
    list_filter = ["approval_status"]


@admin.register(RTDose)
class RTDoseAdmin(ViewOnlyAdmin):
    project_path = "instance__series__project"
    list_display = ["instance", "dose_type", "dose_summation_type", "dose_units", "referenced_plan_uid"]
    search_fields = ["instance__sop_instance_uid", "referenced_plan_uid"]
    list_filter = ["dose_type", "dose_summation_type"]


from dicomflow.catalog import admin_rt  # noqa: E402,F401  stored analysis (RT references, checks, sanity)
