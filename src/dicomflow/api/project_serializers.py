"""Serializers of the research-project API (``project_views``): request bodies and response shapes.

Responses name rows by database id and project copies by their (de-identified) UIDs; clinical
identities never appear.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from dicomflow.catalog.models import SanityStatusChoice
from dicomflow.projects.models import Role, Sex


# --- staging -----------------------------------------------------------------------------------------
class StagingRequestSerializer(serializers.Serializer):
    study_uid = serializers.CharField(max_length=64, help_text="Study Instance UID of a clinical study (Study0).")
    series_uids = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, allow_empty=True,
        help_text="Series of that study to stage (default: all); what they reference is staged too.")


class StagingJobSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk", help_text="Staging job id.")
    project = serializers.CharField(source="project.key", help_text="Project key.")
    status = serializers.CharField(help_text="pending, running, finished or failed (the one status vocabulary of long jobs).")
    stage = serializers.CharField(help_text="Current stage: waiting, select, deidentify, import, finalise, done.")
    done = serializers.IntegerField(help_text="Items done in the current stage.")
    total = serializers.IntegerField(help_text="Items of the current stage.")
    requested_series = serializers.ListField(child=serializers.CharField(), help_text="Series UIDs asked for.")
    selected_series = serializers.ListField(child=serializers.CharField(),
                                            help_text="Requested series and all they reference.")
    files_in = serializers.IntegerField(help_text="Files de-identified.")
    files_out = serializers.IntegerField(help_text="Files released into the project.")
    instances_new = serializers.IntegerField(help_text="Instances new in the project's copy.")
    instances_duplicate = serializers.IntegerField(help_text="Instances the copy held already.")
    error = serializers.CharField(allow_blank=True, help_text="Why the job failed (no identifying values).")
    created_at = serializers.DateTimeField(help_text="When staging was asked for.")
    finished_at = serializers.DateTimeField(allow_null=True, help_text="When the job ended.")


# --- subjects, events, slots -------------------------------------------------------------------------------
class SubjectCreateSerializer(serializers.Serializer):
    study_subject_id = serializers.CharField(
        max_length=64, required=False, allow_blank=True,
        help_text="The subject's ID in the study (never a clinical Patient ID); empty: the keyed pseudonym "
                  "of the given clinical patient.")
    patient = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="Catalog id of the clinical patient (Study0) to enrol; needs clinical-pool access.")
    sex = serializers.ChoiceField(choices=[Sex.FEMALE, Sex.MALE, Sex.OTHER], help_text="Expected sex: F, M or O.")
    birth_date = serializers.DateField(required=False, allow_null=True,
                                       help_text="Expected birth date (give it or the birth year).")
    birth_year = serializers.IntegerField(required=False, allow_null=True,
                                          help_text="Expected birth year (give it or the birth date).")


class SubjectSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk", help_text="Subject id (used in the events URL).")
    study_subject_id = serializers.CharField(help_text="The subject's ID in the study; staged copies carry it.")
    sex = serializers.CharField(source="expected_sex", help_text="Expected sex (F, M, O).")
    birth_date = serializers.DateField(source="expected_birth_date", allow_null=True, help_text="Expected birth date.")
    birth_year = serializers.IntegerField(source="expected_birth_year", allow_null=True,
                                          help_text="Expected birth year.")
    linked = serializers.SerializerMethodField(help_text="Whether a clinical patient is enrolled as this subject.")
    created_at = serializers.DateTimeField(help_text="When the subject was enrolled.")

    def get_linked(self, obj) -> bool:
        return obj.patient_id is not None


class EventCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Event name (visit, time point); unique per subject.")
    date = serializers.DateField(required=False, allow_null=True, help_text="When the event took place.")
    order = serializers.IntegerField(required=False, allow_null=True, help_text="Position among the subject's events.")


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk", help_text="Event id (used in the slots URL).")
    subject = serializers.IntegerField(source="subject_id", help_text="Subject id.")
    name = serializers.CharField(help_text="Event name.")
    date = serializers.DateField(allow_null=True, help_text="When the event took place.")
    order = serializers.IntegerField(help_text="Position among the subject's events.")


class SlotCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Slot name (e.g. 'Planning CT'); unique per event.")


class SlotLinkHistorySerializer(serializers.Serializer):
    study_uid = serializers.CharField(source="study_instance_uid", help_text="Study Instance UID of the project copy.")
    linked_by = serializers.CharField(source="linked_by.username", default=None, allow_null=True,
                                      help_text="Who linked it (null: the command line or a deleted user).")
    linked_at = serializers.DateTimeField(help_text="When it was linked.")
    replaced_at = serializers.DateTimeField(allow_null=True, help_text="When another study replaced it.")


class SlotSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk", help_text="Slot id (used in the link URL).")
    event = serializers.IntegerField(source="event_id", help_text="Event id.")
    name = serializers.CharField(help_text="Slot name.")
    study_uid = serializers.CharField(source="study.study_instance_uid", default=None, allow_null=True,
                                      help_text="Study Instance UID of the project copy linked now (null: empty).")
    history = SlotLinkHistorySerializer(many=True, source="links.all", help_text="Every study ever linked.")


class SlotLinkSerializer(serializers.Serializer):
    study_uid = serializers.CharField(max_length=64, help_text="Study Instance UID of a study of the project's copy.")
    confirm = serializers.BooleanField(default=False, help_text="Replace the study the slot holds (else 409).")


# --- sanity overrides ---------------------------------------------------------------------------------------
class SanityOverrideCreateSerializer(serializers.Serializer):
    result = serializers.IntegerField(help_text="Id of the sanity result (of a subject of the project) to override.")
    reason = serializers.CharField(max_length=4000, help_text="Why the data belong to the subject (required).")
    status = serializers.ChoiceField(choices=SanityStatusChoice.choices, default=SanityStatusChoice.MATCHES,
                                     help_text="The status to accept the result as.")


class SanityOverrideSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk", help_text="Override id.")
    result = serializers.IntegerField(source="result_id", help_text="Sanity result id.")
    result_status = serializers.CharField(source="result.status", help_text="The result's own status (kept).")
    status = serializers.CharField(help_text="The status it is accepted as.")
    reason = serializers.CharField(help_text="The reason given.")
    user = serializers.CharField(source="username", help_text="Who overrode it.")
    created_at = serializers.DateTimeField(help_text="When.")


# --- members ------------------------------------------------------------------------------------------------
class MemberSerializer(serializers.Serializer):
    user = serializers.CharField(source="user.username", help_text="User name.")
    role = serializers.ChoiceField(choices=Role.choices, help_text="Role in the project.")
    created_at = serializers.DateTimeField(help_text="When the user joined the project.")


class MemberCreateSerializer(serializers.Serializer):
    user = serializers.CharField(max_length=150, help_text="User name.")
    role = serializers.ChoiceField(choices=Role.choices, help_text="Role to give (an existing member's role changes).")


# --- uploads into a project (fields of POST /api/uploads/ and of the upload's representation) ---------------
class UploadTargetSerializer(serializers.Serializer):
    """The optional project fields of ``POST /api/uploads/``."""

    project = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                    help_text="Project key: the upload is staged into it after the import "
                                              "(needs the uploader role or above there).")
    subject = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                    help_text="Study subject ID of an enrolled subject of the project.")
    event = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                  help_text="Name of an event of that subject.")
    slot = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                 help_text="Name of an upload slot of that event; the project copy is linked to it.")
    template = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                     help_text="Processing template started on the uploaded series after the import.")
    confirm = serializers.BooleanField(default=False, help_text="Replace the study the slot holds (else 409).")


UPLOAD_LINK_FIELDS = ["project", "studies", "project_studies", "jobs"]


class UploadLinksMixin(serializers.Serializer):
    """What an upload led to, for the SDK to wait on: its studies, their project copies, the jobs."""

    project = serializers.SerializerMethodField(help_text="Key of the project the upload went into (null: none).")
    studies = serializers.SerializerMethodField(help_text="Study Instance UIDs of the uploaded studies (once imported).")
    project_studies = serializers.SerializerMethodField(
        help_text="Study Instance UIDs of the project's copies of them (uploads into a project).")
    jobs = serializers.SerializerMethodField(help_text="Ids of processing jobs on the uploaded series.")

    def _links(self, obj) -> dict:
        from dicomflow.projects.selectors import upload_links

        cache = self.context.setdefault("_upload_links", {})
        if obj.pk not in cache:
            cache[obj.pk] = upload_links(obj)
        return cache[obj.pk]

    @extend_schema_field(OpenApiTypes.STR)
    def get_project(self, obj) -> str | None:
        return self._links(obj)["project"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_studies(self, obj) -> list[str]:
        return self._links(obj)["studies"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_project_studies(self, obj) -> list[str]:
        return self._links(obj)["project_studies"]

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_jobs(self, obj) -> list[int]:
        return self._links(obj)["jobs"]
