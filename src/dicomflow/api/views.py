"""REST API views: thin. Reads go through ``access`` (who sees what) and ``reads``; uploads through
``dicomflow.intake.resumable``. Every error is JSON ``{"detail", "code"}`` with a message a user can
act on and no identifying values (resumable-upload offset errors add ``"offset"``).
"""

from __future__ import annotations

import json
import logging

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from dicomflow.accounts import audit
from dicomflow.accounts.authentication import ApiKeyAuthentication
from dicomflow.accounts.models import AuditAction
from dicomflow.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyLoginSerializer,
    ChunkResultSerializer,
    ErrorSerializer,
    ImportRunSerializer,
    ImportRunSummarySerializer,
    InstanceSerializer,
    PatientSerializer,
    SeriesDetailSerializer,
    SeriesSerializer,
    StudySerializer,
    UploadCreateSerializer,
    UploadSessionSerializer,
)
from dicomflow.catalog import rt_selectors
from dicomflow.catalog import selectors as catalog
from dicomflow.errors import DicomflowError, InputError, PermissionDeniedError, UploadError
from dicomflow.intake import resumable
from dicomflow.intake.models import ImportRun, SourceKind, UploadSession
from dicomflow.projects import selectors as visibility

log = logging.getLogger(__name__)
UID_REGEX = r"[^/]{1,64}"


def _filter_parameters(kind: str) -> list[OpenApiParameter]:
    types = {"patient": int, "date_from": OpenApiTypes.DATE, "date_to": OpenApiTypes.DATE}
    return [OpenApiParameter(name, types.get(name, str), required=False) for name in catalog.FILTERS[kind]]


ERRORS = {400: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


# --- catalog -------------------------------------------------------------------------------------------
@extend_schema_view(list=extend_schema(parameters=_filter_parameters("patients"), responses={200: PatientSerializer, **ERRORS}))
class PatientViewSet(viewsets.ReadOnlyModelViewSet):
    """Patients you may see (clinical pool and/or your projects' de-identified copies)."""

    serializer_class = PatientSerializer

    def get_queryset(self):
        qs = visibility.visible_patients(self.request.user).select_related("project")
        return catalog.filter_patients(qs, self.request.query_params).order_by("patient_id", "pk")


@extend_schema_view(list=extend_schema(parameters=_filter_parameters("studies"), responses={200: StudySerializer, **ERRORS}))
class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = StudySerializer
    lookup_field = "study_instance_uid"
    lookup_value_regex = UID_REGEX

    def get_queryset(self):
        qs = visibility.visible_studies(self.request.user)
        return catalog.filter_studies(qs, self.request.query_params).order_by("-study_date", "study_instance_uid")

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    @action(detail=True, methods=["get"], url_path="rt-tree")
    def rt_tree(self, request, study_instance_uid=None):
        """The study's RT tree (references, approval status) and stored check findings."""
        study = self.get_object()
        return Response({
            "study_instance_uid": study.study_instance_uid,
            "analysed": rt_selectors.is_analysed(study),
            "tree": rt_selectors.study_tree(study)["series"],
            "checks": rt_selectors.study_checks(study),
            "approval": rt_selectors.approval_statuses(study, include_review=visibility.can_see_clinical(request.user)),
        })


class ZipRenderer(BaseRenderer):
    media_type = "application/zip"
    format = "zip"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


@extend_schema_view(list=extend_schema(parameters=_filter_parameters("series"), responses={200: SeriesSerializer, **ERRORS}))
class SeriesViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "series_instance_uid"
    lookup_value_regex = UID_REGEX

    def get_serializer_class(self):
        return SeriesDetailSerializer if self.action == "retrieve" else SeriesSerializer

    def get_queryset(self):
        qs = visibility.visible_series(self.request.user)
        return catalog.filter_series(qs, self.request.query_params).order_by("study_id", "series_number", "series_instance_uid")

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, **ERRORS})
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, ZipRenderer])
    def download(self, request, series_instance_uid=None):
        """The series' stored files as a ZIP (members ``<SOP Instance UID>.dcm``), streamed from the store.
        Audited (SERIES_DOWNLOAD, one entry per download)."""
        series = get_object_or_404(visibility.visible_series(request.user).select_related("project"),
                                   series_instance_uid=series_instance_uid)
        catalog.check_series_files(series)
        audit.record(request.user, AuditAction.SERIES_DOWNLOAD, project=series.project or "", obj=f"series #{series.pk}",
                     detail="stored files as ZIP")
        response = StreamingHttpResponse(catalog.stream_series_zip(series), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="series-{series.series_instance_uid}.zip"'
        return response


@extend_schema_view(list=extend_schema(parameters=_filter_parameters("instances"), responses={200: InstanceSerializer, **ERRORS}))
class InstanceViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = InstanceSerializer
    lookup_field = "sop_instance_uid"
    lookup_value_regex = UID_REGEX

    def get_queryset(self):
        qs = visibility.visible_instances(self.request.user)
        return catalog.filter_instances(qs, self.request.query_params).order_by("series_id", "instance_number", "sop_instance_uid")


class CanViewImports(IsAuthenticated):
    message = "you may not see imports (ask for the 'view import run' permission)"

    def has_permission(self, request, view):
        return visibility.can_view_imports(request.user)


class ProjectViewSet(viewsets.ReadOnlyModelViewSet):
    """Research projects you belong to (all, for superusers); filter the catalog with ``?project=<key>``."""

    lookup_field = "key"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

    def get_serializer_class(self):
        from dicomflow.api.serializers import ProjectSerializer

        return ProjectSerializer

    def get_queryset(self):
        return visibility.projects_for(self.request.user).order_by("key")


# --- imports ---------------------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("source_kind", str, required=False, enum=SourceKind.values)],
        responses={200: ImportRunSummarySerializer, **ERRORS},
    )
)
class ImportRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Imports from every source, newest first; the list gives counts, the detail the paths and reasons."""

    def get_serializer_class(self):
        return ImportRunSerializer if self.action == "retrieve" else ImportRunSummarySerializer

    permission_classes = [CanViewImports]
    queryset = ImportRun.objects.all()

    def get_queryset(self):
        qs = ImportRun.objects.all()
        if kind := self.request.query_params.get("source_kind"):
            qs = qs.filter(source_kind=kind)
        return qs.order_by("-started_at", "-id")


# --- resumable uploads -------------------------------------------------------------------------------------
class RawChunkParser(BaseParser):
    """Declares the raw chunk body (``application/octet-stream``); the view reads the bytes itself."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream else b""


OFFSET_HEADER = OpenApiParameter(
    "Upload-Offset", int, OpenApiParameter.HEADER, required=True,
    description="Where this chunk starts in the file: the 'received' the server reports for it.",
)


class UploadSessionViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin,
                           mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Resumable uploads: create (declare files) → PUT chunks → finalize → poll until finished.

    Sessions are private to the user who created them (and superusers).
    """

    serializer_class = UploadSessionSerializer
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"

    def get_queryset(self):
        user = self.request.user
        qs = UploadSession.objects.all() if user.is_superuser else UploadSession.objects.filter(owner=user)
        return qs.order_by("-created_at")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["with_files"] = self.action != "list" and self.request.query_params.get("files", "1") != "0"
        return context

    @extend_schema(request=UploadCreateSerializer, responses={201: UploadSessionSerializer, 413: ErrorSerializer, **ERRORS})
    def create(self, request, *args, **kwargs):
        """Declare the files (name, size, sha256); answers with the session and where each file stands.

        With ``project`` the upload goes into that research project (uploader role or above there):
        after the import its studies are staged into the project, linked to ``slot`` (of ``subject``'s
        ``event``) when given, and ``template`` starts a processing job on the uploaded series. The
        upload's ``project_studies`` and ``jobs`` then name them.
        """
        data = UploadCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        kind = SourceKind.BROWSER_UPLOAD if values["source"] == "browser" else SourceKind.API_UPLOAD
        files = [dict(f) for f in values["files"]]
        if values.get("project"):
            from dicomflow.projects.uploads import create_project_upload, upload_target

            target = upload_target(request.user, values["project"], subject=values.get("subject"),
                                   event=values.get("event"), slot=values.get("slot"),
                                   template=values.get("template"), confirm=values["confirm"])
            session = create_project_upload(request.user, files, kind, target)
        else:
            if any(values.get(k) for k in ("subject", "event", "slot", "template")):
                raise InputError("subject, event, slot and template need the project the upload goes into")
            if not visibility.can_upload(request.user):
                raise PermissionDenied("you may not upload (ask for the 'add upload session' permission)")
            session = resumable.create_session(files, owner=request.user, source_kind=kind)
        return Response(self.get_serializer(session).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OpenApiParameter("files", str, required=False, description="'0' leaves the file list out")])
    def retrieve(self, request, *args, **kwargs):
        """The session: status, bytes received per file (resume from there), import progress and result."""
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(responses={200: UploadSessionSerializer, 409: ErrorSerializer, **ERRORS})
    def destroy(self, request, *args, **kwargs):
        """Cancel a session still receiving and delete its bytes."""
        session = self.get_object()
        return Response(self.get_serializer(resumable.cancel(session.pk)).data)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[OFFSET_HEADER],
        responses={200: ChunkResultSerializer, 409: ErrorSerializer, 413: ErrorSerializer, 422: ErrorSerializer, **ERRORS},
    )
    @action(detail=True, methods=["put"], url_path=r"files/(?P<index>\d+)", parser_classes=[RawChunkParser])
    def chunk(self, request, pk=None, index=None):
        """Write one chunk of file ``index`` at ``Upload-Offset``; answers with the new offset.

        A wrong offset is refused (409) with the offset to resume from; re-sending bytes the server
        already holds is harmless. The last chunk triggers the sha256 check (422 if it differs:
        the file's bytes are discarded, send it again).
        """
        session = self.get_object()
        offset = request.headers.get("Upload-Offset", request.query_params.get("offset"))
        try:
            offset = int(offset)
        except (TypeError, ValueError):
            raise UploadError("send the chunk's start in the Upload-Offset header (a whole number of bytes)") from None
        limits = resumable.UploadLimits.from_env()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limits.max_chunk:
            raise resumable.UploadLimitError(f"chunk of {length} bytes; send at most {limits.max_chunk} bytes per request")
        data = request._request.read(limits.max_chunk + 1)
        row = resumable.write_chunk(session.pk, int(index), offset, data, limits)
        response = Response({"index": row.index, "received": row.received, "size": row.size,
                             "complete": row.complete, "sha256": row.sha256 if row.complete else ""})
        response["Upload-Offset"] = str(row.received)
        return response

    @extend_schema(request=None, responses={202: UploadSessionSerializer, 409: ErrorSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def finalize(self, request, pk=None):
        """Every file complete → the import is queued (a Celery task); poll the session for progress."""
        session = self.get_object()
        session = resumable.finalize(session.pk)
        context = self.get_serializer_context() | {"with_files": False}
        return Response(UploadSessionSerializer(session, context=context).data, status=status.HTTP_202_ACCEPTED)


# --- API keys for a user name and password (the SDK's Client.login) ---------------------------------------
class ApiKeyLoginView(APIView):
    """Exchange a user name and password for a new API key (shown once; stored hashed)."""

    authentication_classes = [ApiKeyAuthentication]  # its challenge: a wrong password answers 401
    permission_classes: list = []

    @extend_schema(request=ApiKeyLoginSerializer, responses={201: ApiKeyCreatedSerializer, 400: ErrorSerializer})
    def post(self, request):
        from django.contrib.auth import authenticate

        from dicomflow.accounts.services import create_api_key

        data = ApiKeyLoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, username=data.validated_data["username"],
                            password=data.validated_data["password"])
        if user is None or not user.is_active:
            raise AuthenticationFailed("wrong user name or password")
        from dicomflow.accounts import bootstrap

        if user.is_superuser and bootstrap.initial_password() == data.validated_data["password"]:
            raise PermissionDenied("this is the generated first password: log in at /login/ and choose your own first")
        row, key = create_api_key(user, user, name="SDK login", expires_in_days=data.validated_data.get("expires_in_days"))
        return Response({"key": key, "token": key, "prefix": row.prefix,
                         "expires": row.expiry_date.isoformat() if row.expiry_date else None},
                        status=status.HTTP_201_CREATED)
