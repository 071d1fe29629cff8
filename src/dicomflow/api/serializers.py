"""Serializers of the REST API: read-only shapes of catalog rows, imports and upload sessions."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from dicomflow.api.project_serializers import UPLOAD_LINK_FIELDS, UploadLinksMixin, UploadTargetSerializer
from dicomflow.catalog.models import ImageInformation, Instance, Patient, Series, Study
from dicomflow.intake.models import ImportRun, UploadFile, UploadSession
from dicomflow.progress import Status


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong and what to do; never identifying values.")
    code = serializers.CharField(required=False)
    offset = serializers.IntegerField(required=False, help_text="Resumable uploads: the offset to resume from.")


class ProjectKeyField(serializers.CharField):
    def to_representation(self, value):
        return value.key if value is not None else None


class ProjectKeyMixin(serializers.Serializer):
    """``project``: the key of the research project a row belongs to (null: the clinical pool)."""

    project = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.STR)
    def get_project(self, obj) -> str | None:
        return obj.project.key if obj.project_id else None


class PatientSerializer(ProjectKeyMixin, serializers.ModelSerializer):
    study_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Patient
        fields = ["id", "patient_id", "issuer_of_patient_id", "patient_name", "birth_date", "sex", "project",
                  "study_count", "created_at"]


class StudySerializer(ProjectKeyMixin, serializers.ModelSerializer):
    patient = serializers.IntegerField(source="patient_id", read_only=True)
    patient_id = serializers.CharField(source="patient.patient_id", read_only=True)
    series_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Study
        fields = ["study_instance_uid", "patient", "patient_id", "study_date", "study_time", "study_id",
                  "accession_number", "description", "project", "series_count", "created_at"]


class SeriesSerializer(ProjectKeyMixin, serializers.ModelSerializer):
    study_instance_uid = serializers.CharField(source="study.study_instance_uid", read_only=True)
    patient = serializers.IntegerField(source="study.patient_id", read_only=True)
    instance_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Series
        fields = ["series_instance_uid", "study_instance_uid", "patient", "modality", "series_number",
                  "description", "series_date", "body_part_examined", "frame_of_reference_uid", "project",
                  "instance_count", "created_at"]


class SeriesDetailSerializer(SeriesSerializer):
    image = serializers.SerializerMethodField(help_text="Geometry from the catalogued headers (image series).")
    rt = serializers.SerializerMethodField(help_text="Structure sets with ROIs, plans, doses, RT images.")
    checks = serializers.SerializerMethodField(help_text="Stored check result (like one 'dicomflow check' entry).")
    processing = serializers.SerializerMethodField(help_text="Processing status, template chosen by the rules.")

    class Meta(SeriesSerializer.Meta):
        fields = SeriesSerializer.Meta.fields + ["image", "rt", "checks", "processing"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_processing(self, obj):
        from dicomflow.processing.selectors import series_processing_state

        return series_processing_state(obj)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_image(self, obj):
        from dicomflow.catalog.selectors import image_geometry

        return image_geometry(obj)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_rt(self, obj):
        from dicomflow.catalog.selectors import rt_details

        return rt_details(obj)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_checks(self, obj):
        from dicomflow.catalog.selectors import series_checks

        return series_checks(obj)


class ImageInformationSerializer(serializers.Serializer):
    rows = serializers.IntegerField(allow_null=True)
    columns = serializers.IntegerField(allow_null=True)
    number_of_frames = serializers.IntegerField()
    pixel_spacing = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    slice_thickness = serializers.FloatField(allow_null=True)
    image_position_patient = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    image_orientation_patient = serializers.ListField(child=serializers.FloatField(), allow_null=True)


class InstanceSerializer(serializers.ModelSerializer):
    series_instance_uid = serializers.CharField(source="series.series_instance_uid", read_only=True)
    image = serializers.SerializerMethodField()

    class Meta:
        model = Instance
        fields = ["sop_instance_uid", "sop_class_uid", "series_instance_uid", "instance_number",
                  "transfer_syntax_uid", "sha256", "size", "received_at", "image"]

    @extend_schema_field(ImageInformationSerializer(allow_null=True))
    def get_image(self, obj):
        try:
            image = obj.image
        except ImageInformation.DoesNotExist:
            return None
        return ImageInformationSerializer(image).data


class PathReasonSerializer(serializers.Serializer):
    path = serializers.CharField()
    reason = serializers.CharField()


class ImportRunSerializer(serializers.ModelSerializer):
    conflicts = PathReasonSerializer(many=True, read_only=True)
    ignored = PathReasonSerializer(many=True, read_only=True)

    class Meta:
        model = ImportRun
        fields = ["id", "source_kind", "source", "started_at", "finished_at", "files_seen", "instances_new",
                  "instances_duplicate", "conflicts", "ignored"]


class ImportRunSummarySerializer(serializers.ModelSerializer):
    conflicts = serializers.SerializerMethodField()
    ignored = serializers.SerializerMethodField()

    class Meta:
        model = ImportRun
        fields = ["id", "source_kind", "source", "started_at", "finished_at", "files_seen", "instances_new",
                  "instances_duplicate", "conflicts", "ignored"]

    def get_conflicts(self, obj) -> int:
        return len(obj.conflicts or [])

    def get_ignored(self, obj) -> int:
        return len(obj.ignored or [])


# --- resumable uploads -------------------------------------------------------------------------------
class DeclaredFileSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=1024, help_text="Relative name, for reports only.")
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False, allow_blank=True)


class UploadCreateSerializer(UploadTargetSerializer):
    files = DeclaredFileSerializer(many=True, allow_empty=False)
    source = serializers.ChoiceField(choices=["api", "browser"], default="api",
                                     help_text="'browser' for the folder upload page.")


class UploadFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = UploadFile
        fields = ["index", "name", "size", "sha256", "received", "complete"]


class SeriesTouchedSerializer(serializers.Serializer):
    uid = serializers.CharField()
    modality = serializers.CharField()
    description = serializers.CharField(allow_blank=True)


class ImportReportSerializer(serializers.Serializer):
    files_seen = serializers.IntegerField()
    instances_new = serializers.IntegerField()
    instances_duplicate = serializers.IntegerField()
    conflicts = PathReasonSerializer(many=True)
    ignored = PathReasonSerializer(many=True)
    patients = serializers.IntegerField()
    studies = serializers.IntegerField()
    series = serializers.IntegerField()
    series_uids = serializers.ListField(child=serializers.CharField(), required=False,
                                        help_text="Series the import touched (at most 200).")
    series_list = SeriesTouchedSerializer(many=True, required=False)


class ProgressSerializer(serializers.Serializer):
    """The one progress format of long jobs (``dicomflow.progress.LongJob.progress_dict``)."""

    status = serializers.ChoiceField(choices=Status.choices, help_text="pending, running, waiting (for a person "
                                     "or a client), finished, failed or cancelled.")
    stage = serializers.CharField(allow_blank=True, help_text="The current stage (its names depend on the kind).")
    done = serializers.IntegerField(help_text="Work done in the current stage.")
    total = serializers.IntegerField(help_text="Work of the current stage (0: not known yet).")
    percent = serializers.IntegerField(help_text="Overall progress, 0 to 100.")
    started_at = serializers.DateTimeField(allow_null=True, help_text="When a worker started it.")
    finished_at = serializers.DateTimeField(allow_null=True, help_text="When it ended.")
    error = serializers.CharField(allow_blank=True, help_text="Why it failed (no identifying values).")


@extend_schema_field(ProgressSerializer)
class ProgressField(serializers.Field):
    """``progress``: the object's ``progress_dict()``."""

    def __init__(self, **kwargs):
        super().__init__(source="*", read_only=True, help_text="Status, stage, done/total, percent, times and "
                         "error in the one progress format of long jobs.", **kwargs)

    def to_representation(self, value):
        return value.progress_dict()


class UploadSessionSerializer(UploadLinksMixin, serializers.ModelSerializer):
    files = serializers.SerializerMethodField(help_text="Per file: bytes received (the offset to resume from).")
    result = ImportReportSerializer(allow_null=True, read_only=True)
    finished = serializers.SerializerMethodField()
    progress = ProgressField()
    import_done = serializers.IntegerField(source="done", read_only=True,
                                           help_text="Files imported so far (ZIP members count); progress.done.")
    import_total = serializers.IntegerField(source="total", read_only=True,
                                            help_text="Files to import (ZIP members count); progress.total.")
    error_message = serializers.CharField(source="error", read_only=True, help_text="Why the upload failed.")

    class Meta:
        model = UploadSession
        fields = ["id", "status", "source_kind", "file_count", "files_complete", "total_size", "received_size",
                  "import_done", "import_total", "import_run", "result", "error_message", "finished",
                  "created_at", "finished_at", "files", "progress"] + UPLOAD_LINK_FIELDS

    @extend_schema_field(UploadFileSerializer(many=True))
    def get_files(self, obj):
        if not self.context.get("with_files", True):
            return None
        return UploadFileSerializer(obj.upload_files.all(), many=True).data

    def get_finished(self, obj) -> bool:
        return obj.is_over


class ChunkResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    received = serializers.IntegerField(help_text="Bytes the server holds: the next chunk's offset.")
    size = serializers.IntegerField()
    complete = serializers.BooleanField()
    sha256 = serializers.CharField(allow_blank=True)


class ProjectSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class ApiKeyLoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="Your user name.")
    password = serializers.CharField(max_length=4096, help_text="Your password.", style={"input_type": "password"})
    expires_in_days = serializers.IntegerField(required=False, min_value=1, max_value=3650,
                                               help_text="Days until the key stops working (default: never).")


class ApiKeyCreatedSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The API key: send it as X-Api-Key. Shown once, stored hashed.")
    token = serializers.CharField(help_text="The same key (older clients read this name).")
    prefix = serializers.CharField(help_text="The key's public prefix, to recognise and revoke it.")
    expires = serializers.DateTimeField(allow_null=True, help_text="When the key stops working.")
