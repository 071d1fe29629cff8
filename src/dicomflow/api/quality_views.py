"""The RT quality loop through the REST API: a job's contour ratings and comparisons, the ratings
as CSV, processing statistics, and Eclipse structure templates into a template. Thin: reads through
``dicomflow.quality.selectors``, writes through ``dicomflow.quality.services`` as the request's user.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FileUploadParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from dicomflow.api.serializers import ErrorSerializer
from dicomflow.errors import InputError
from dicomflow.quality import selectors, services
from dicomflow.quality.models import Rating

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}
MAX_XML_UPLOAD = 2 * 1024 * 1024


class RoiRatingSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    rating = serializers.ChoiceField(choices=Rating.choices)
    minutes = serializers.IntegerField(min_value=0, max_value=services.MAX_MINUTES, required=False, allow_null=True)
    comment = serializers.CharField(max_length=services.MAX_COMMENT, required=False, allow_blank=True, default="")


class RatingRequestSerializer(serializers.Serializer):
    overall_score = serializers.IntegerField(min_value=0, max_value=10)
    comment = serializers.CharField(max_length=services.MAX_COMMENT, required=False, allow_blank=True, default="")
    rois = RoiRatingSerializer(many=True, allow_empty=False)


class RatingSerializer(serializers.Serializer):
    assessor = serializers.CharField()
    overall_score = serializers.IntegerField()
    comment = serializers.CharField()
    rated_at = serializers.CharField()
    rois = RoiRatingSerializer(many=True)


class JobRatingsSerializer(serializers.Serializer):
    job = serializers.IntegerField()
    roi_names = serializers.ListField(child=serializers.CharField())
    ratings = RatingSerializer(many=True)


class ComparisonSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    computed_at = serializers.CharField()
    tolerance_mm = serializers.FloatField()
    rois = serializers.ListField(child=serializers.DictField())
    only_in_result = serializers.ListField(child=serializers.CharField())
    only_in_reference = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()


class StructureImportSerializer(serializers.Serializer):
    template = serializers.CharField()
    structures = serializers.ListField(child=serializers.CharField())
    source = serializers.CharField()


def _job(request, job_id: int):
    return services.job_for(request.user, job_id)


def _ratings_document(job) -> dict:
    return {"job": job.pk, "roi_names": services.result_roi_names(job), "ratings": selectors.job_ratings(job)}


class JobRatingView(APIView):
    """Contour ratings of a job's result: every assessor's, and yours to set."""

    @extend_schema(description="Every rating of the job's returned contours and the ROI names that can be rated.",
                   responses={200: JobRatingsSerializer, **ERRORS})
    def get(self, request, job_id: int):
        return Response(_ratings_document(_job(request, job_id)))

    @extend_schema(description="Rate the job's returned contours (data-manager role): per ROI no_edit, minor, major, "
                               "not_usable or not_segmented, minutes spent editing and a comment; an overall score "
                               "0-10. Replaces your earlier rating of this job.",
                   request=RatingRequestSerializer, responses={200: JobRatingsSerializer, **ERRORS})
    def put(self, request, job_id: int):
        data = RatingRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        services.rate_job(request.user, job_id, overall_score=values["overall_score"], comment=values["comment"],
                          rois=[dict(r) for r in values["rois"]])
        return Response(_ratings_document(_job(request, job_id)))


class JobComparisonsView(APIView):
    """Comparisons of the job's result with structure sets that came back for its series."""

    @extend_schema(description="Per ROI Dice, Jaccard, HD95, mean surface distance, surface Dice and added path "
                               "length of the job's result against each edited structure set received since.",
                   responses={200: ComparisonSerializer(many=True), **ERRORS})
    def get(self, request, job_id: int):
        return Response(selectors.job_comparisons(_job(request, job_id)))


class RatingsCsvView(APIView):
    """All ratings you may see as CSV (one row per rated ROI)."""

    @extend_schema(description="Ratings of the jobs you may see, one row per ROI, with the latest comparison's Dice, "
                               "HD95 and APL: columns " + ", ".join(selectors.CSV_COLUMNS) + ".",
                   parameters=[OpenApiParameter("project", str, required=False, description="A project key."),
                               OpenApiParameter("template", str, required=False, description="A template name.")],
                   responses={(200, "text/csv"): OpenApiTypes.STR, **ERRORS})
    def get(self, request):
        params = request.query_params
        body = selectors.ratings_csv(request.user, project=params.get("project") or None,
                                     template=params.get("template") or None)
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="ratings.csv"'
        return response


class StatisticsView(APIView):
    """Processing statistics (administrators and data managers)."""

    @extend_schema(description="Series received and matched, jobs processed and failed (by stage), average time per "
                               "stage, per template and per week, for the projects you manage.",
                   parameters=[OpenApiParameter("project", str, required=False, description="A project key."),
                               OpenApiParameter("template", str, required=False, description="A template name."),
                               OpenApiParameter("weeks", int, required=False, description="How far back (1-520).")],
                   responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def get(self, request):
        params = request.query_params
        weeks = params.get("weeks", "12")
        if not weeks.isdigit() or not 1 <= int(weeks) <= 520:
            raise InputError("weeks must be a whole number from 1 to 520")
        return Response(selectors.statistics(request.user, project=params.get("project") or None,
                                             template=params.get("template") or None, weeks=int(weeks)))


class EclipseStructuresView(APIView):
    """A Varian Eclipse structure template (XML) becomes the template's structure list."""

    parser_classes = [MultiPartParser, FileUploadParser]

    @extend_schema(description="Upload an Eclipse structure template export (XML, as the file 'file' of a multipart "
                               "form or as the body): the template's structures become its structures (names, "
                               "labels, colours, RT ROI interpreted types), checked against TG-263 "
                               "(template-change permission).",
                   request={"multipart/form-data": {"type": "object", "properties": {
                       "file": {"type": "string", "format": "binary"}}}},
                   responses={200: StructureImportSerializer, **ERRORS})
    def post(self, request, name: str):
        upload = request.data.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise InputError("send the Eclipse structure template XML as the file 'file'")
        if upload.size > MAX_XML_UPLOAD:
            raise InputError("the structure template is larger than 2 MiB")
        return Response(services.import_eclipse_structures(request.user, name, upload.read()))
