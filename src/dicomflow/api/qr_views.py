"""Query/Retrieve from a configured DICOM node (a clinical PACS), under ``/api/qr/``: thin views
over ``dicomflow.projects.pacs`` (which checks the role and writes the audit log).

``GET nodes/`` — the nodes one may query; ``POST find/`` — studies (C-FIND); ``POST series/`` — the
series of one study; ``POST retrieve/`` — pull into the clinical pool (C-GET, or C-MOVE to the
receiver with ``"move": true``), answering the import counters. Only configured node names are
accepted (never an address). Finding needs sight of the clinical pool, pulling also the right to
add to it (403 otherwise); a node that cannot be reached or refuses answers 502.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from dicomflow.api.serializers import ErrorSerializer
from dicomflow.errors import PermissionDeniedError
from dicomflow.export.qr import Query
from dicomflow.projects import pacs
from dicomflow.projects.selectors import can_see_clinical

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 502: ErrorSerializer}


class NodeSerializer(serializers.Serializer):
    name = serializers.CharField()
    ae_title = serializers.CharField()


class FindRequestSerializer(serializers.Serializer):
    node = serializers.CharField(max_length=64, help_text="Name of a configured DICOM node.")
    patient_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    patient_name = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                         help_text="Wildcards * and ? allowed, e.g. DOE^*.")
    date_from = serializers.CharField(max_length=10, required=False, allow_blank=True, default="")
    date_to = serializers.CharField(max_length=10, required=False, allow_blank=True, default="")
    modality = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    accession_number = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class FoundStudySerializer(serializers.Serializer):
    study_uid = serializers.CharField()
    patient_id = serializers.CharField()
    study_date = serializers.CharField()
    modalities = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    series_count = serializers.IntegerField(allow_null=True)
    in_catalog = serializers.BooleanField()


class FindResponseSerializer(serializers.Serializer):
    studies = FoundStudySerializer(many=True)


class SeriesRequestSerializer(serializers.Serializer):
    node = serializers.CharField(max_length=64)
    study = serializers.CharField(max_length=64)


class FoundSeriesSerializer(serializers.Serializer):
    series_uid = serializers.CharField()
    modality = serializers.CharField()
    number = serializers.IntegerField(allow_null=True)
    description = serializers.CharField()
    instances = serializers.IntegerField(allow_null=True)


class SeriesResponseSerializer(serializers.Serializer):
    series = FoundSeriesSerializer(many=True)


class RetrieveRequestSerializer(serializers.Serializer):
    node = serializers.CharField(max_length=64)
    study = serializers.CharField(max_length=64)
    series = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list,
                                   max_length=1000)
    move = serializers.BooleanField(required=False, default=False)
    filter = serializers.SlugField(max_length=64, required=False, allow_blank=True, default="",
                                   help_text="Intake filter for a C-GET (default: the node's, else the default).")


class RetrieveResponseSerializer(serializers.Serializer):
    files_seen = serializers.IntegerField()
    instances_new = serializers.IntegerField()
    instances_duplicate = serializers.IntegerField()
    conflicts = serializers.ListField(child=serializers.DictField())
    ignored = serializers.ListField(child=serializers.DictField())
    patients = serializers.IntegerField()
    studies = serializers.IntegerField()
    series = serializers.IntegerField()
    method = serializers.CharField()
    retrieve = serializers.DictField()


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class QueryNodesView(APIView):
    @extend_schema(responses={200: NodeSerializer(many=True), **ERRORS})
    def get(self, request):
        """The DICOM nodes one may query (users who see the clinical pool)."""
        if not can_see_clinical(request.user):
            raise PermissionDeniedError("querying a clinical PACS needs sight of the clinical pool")
        return Response([{"name": n.name, "ae_title": n.ae_title} for n in pacs.query_nodes()])


class FindView(APIView):
    @extend_schema(request=FindRequestSerializer, responses={200: FindResponseSerializer, **ERRORS})
    def post(self, request):
        """C-FIND studies on a configured node. Audited."""
        data = _valid(FindRequestSerializer, request.data)
        query = Query(patient_id=data["patient_id"], patient_name=data["patient_name"], date_from=data["date_from"],
                      date_to=data["date_to"], modality=data["modality"], accession_number=data["accession_number"])
        return Response({"studies": pacs.find_studies(request.user, data["node"], query)})


class SeriesView(APIView):
    @extend_schema(request=SeriesRequestSerializer, responses={200: SeriesResponseSerializer, **ERRORS})
    def post(self, request):
        """C-FIND the series of one study on a configured node. Audited."""
        data = _valid(SeriesRequestSerializer, request.data)
        return Response({"series": pacs.find_series(request.user, data["node"], data["study"])})


class RetrieveView(APIView):
    @extend_schema(request=RetrieveRequestSerializer, responses={200: RetrieveResponseSerializer, **ERRORS})
    def post(self, request):
        """Pull a study (or some of its series) into the clinical pool; the import counters. Audited."""
        data = _valid(RetrieveRequestSerializer, request.data)
        doc = pacs.retrieve(request.user, data["node"], data["study"], data["series"], move=data["move"],
                            filter_name=data["filter"] or None)
        return Response(doc)
