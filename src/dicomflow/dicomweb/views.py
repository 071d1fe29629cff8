"""DICOMweb HTTP endpoints (thin): STOW-RS, QIDO-RS and WADO-RS under ``/dicomweb/`` and
``/dicomweb/projects/<key>/``.

Authentication is the REST API's (``X-Api-Key`` or the browser session; 401 with a challenge when
neither is given); errors are RFC 9457 problem details (the API's exception handler). Views check
the Accept header themselves (DRF's negotiation knows no multipart/related) and read STOW bodies
from the raw request stream, never through DRF's parsers.
"""

from __future__ import annotations

import json

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from dicomflow.dicomweb import multipart, selectors, services
from dicomflow.errors import NotAcceptableError
from dicomflow.projects import selectors as visibility
from dicomflow.projects.models import Capability

DICOM_JSON = "application/dicom+json"


class PassThroughNegotiation(BaseContentNegotiation):
    """Leave Accept to the view; errors are rendered as JSON whatever the client accepts."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _accepts(request) -> list[tuple[str, dict]]:
    header = request.META.get("HTTP_ACCEPT", "") or "*/*"
    return [multipart.parse_media_type(item) for item in _split_accept(header)]


def _split_accept(header: str) -> list[str]:
    """Split an Accept header on commas outside quotes."""
    out, current, quoted = [], [], False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [p.strip() for p in out if p.strip()]


def _want_json(request) -> None:
    for media, _ in _accepts(request):
        if media in ("*/*", "application/*", DICOM_JSON, "application/json"):
            return
    raise NotAcceptableError(f"this resource is available as {DICOM_JSON} only")


def _wado_transfer_syntaxes(request) -> set[str] | None:
    """The transfer syntaxes the client accepts for multipart application/dicom; None = any (as stored)."""
    wanted: set[str] = set()
    for media, params in _accepts(request):
        if media in ("*/*", "multipart/*"):
            return None
        if media != "multipart/related":
            continue
        part = multipart.parse_media_type(params.get("type", ""))[0]
        if part in ("", DICOM_PART, "application/*", "*/*"):
            ts = params.get("transfer-syntax", "*")
            if ts == "*":
                return None  # the stored bytes, as they are (no transcoding)
            wanted.add(ts)
    if not wanted:
        raise NotAcceptableError('this resource is available as multipart/related; type="application/dicom" only')
    return wanted


DICOM_PART = "application/dicom"


class DicomwebView(APIView):
    schema = None  # PS3.18 defines these resources; the OpenAPI description points there (settings)
    content_negotiation_class = PassThroughNegotiation
    renderer_classes = [JSONRenderer]
    parser_classes: list = []

    def project(self, capability=Capability.VIEW):
        key = self.kwargs.get("project_key")
        return None if key is None else visibility.project_for(self.request.user, key, capability)

    def base_url(self) -> str:
        key = self.kwargs.get("project_key")
        path = reverse("dicomweb-project-root", kwargs={"project_key": key}) if key else reverse("dicomweb-root")
        return self.request.build_absolute_uri(path)


def _json_response(documents, status: int = 200, warnings=()) -> HttpResponse:
    response = HttpResponse(json.dumps(documents, separators=(",", ":")), status=status, content_type=DICOM_JSON)
    for text in warnings:
        response.headers["Warning"] = f'299 dicomflow: "{text}"' if "Warning" not in response.headers else \
            response.headers["Warning"] + f', 299 dicomflow: "{text}"'
    return response


class SearchView(DicomwebView):
    """QIDO-RS at one level (``level`` from the URL map), optionally within a study / series."""

    level = selectors.STUDY

    def get(self, request, project_key=None, study=None, series=None):
        _want_json(request)
        found = selectors.search(request.user, self.level, request.query_params, project=self.project(),
                                 base_url=self.base_url(), study_uid=study, series_uid=series)
        warnings = list(found.warnings)
        if found.more > 0:
            warnings.append(f"there are {found.more} additional results that can be requested")
        return _json_response(found.documents, warnings=warnings)


class StudiesView(SearchView):
    """``GET studies`` (QIDO-RS) and ``POST studies`` (STOW-RS)."""

    level = selectors.STUDY

    def post(self, request, project_key=None, study=None):
        project = services.check_store_allowed(request.user, project_key)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0) or None
        except ValueError:
            length = None
        result = services.store(request.user, request._request, request.META.get("CONTENT_TYPE", ""),
                                project=project, study_uid=study, base_url=self.base_url(), content_length=length)
        return _json_response(result.document(), status=result.status)


class StudyView(DicomwebView):
    """``GET studies/{study}`` (WADO-RS) and ``POST studies/{study}`` (STOW-RS into that study)."""

    def get(self, request, project_key=None, study=None, series=None, instance=None):
        return retrieve(self, request, study, series, instance)

    def post(self, request, project_key=None, study=None):
        return StudiesView.post(self, request, project_key=project_key, study=study)


def retrieve(view: DicomwebView, request, study, series=None, instance=None):
    accepted = _wado_transfer_syntaxes(request)
    target = selectors.retrieve_target(request.user, study, series, instance, project=view.project())
    if accepted is not None:
        stored = {ts for _, ts, _ in target.files}
        if not stored <= accepted:
            raise NotAcceptableError("the instances are stored in transfer syntax(es) " + ", ".join(sorted(stored))
                                     + "; this server does not transcode: accept transfer-syntax=* or these")
    services.audit_retrieve(request.user, target, f"{target.level} retrieve")
    from django.conf import settings

    store = settings.STORE_DIR
    boundary = multipart.new_boundary()
    files = [(store / path, f"{DICOM_PART}; transfer-syntax={ts}" if ts else DICOM_PART) for path, ts, _ in target.files]
    missing = sum(1 for path, _ in files if not path.is_file())
    if missing:
        from dicomflow.errors import StorageError

        raise StorageError(f"{missing} file(s) of this {target.level} are missing from the file store; "
                           "an administrator should restore them or import them again")
    response = StreamingHttpResponse(
        multipart.write_parts(files, boundary),
        content_type=f'multipart/related; type="{DICOM_PART}"; boundary={boundary}',
    )
    response["Content-Length"] = str(multipart.multipart_length(
        [(path.stat().st_size, ctype) for path, ctype in files], boundary))
    return response


class MetadataView(DicomwebView):
    """``.../metadata`` at study, series or instance level (WADO-RS), streamed instance by instance."""

    def get(self, request, project_key=None, study=None, series=None, instance=None):
        _want_json(request)
        target = selectors.retrieve_target(request.user, study, series, instance, project=self.project())
        services.audit_retrieve(request.user, target, f"{target.level} metadata")
        return StreamingHttpResponse(selectors.metadata(target), content_type=DICOM_JSON)


class FramesView(DicomwebView):
    """``.../instances/{sop}/frames/{n[,m...]}`` (WADO-RS): raw frames of uncompressed instances, as
    ``multipart/related; type="application/octet-stream"`` (what OHIF's ``wadors`` rendering reads)."""

    def get(self, request, project_key=None, study=None, series=None, instance=None, frames=None):
        numbers = [int(n) for n in frames.split(",") if n]
        ok = False
        for media, params in _accepts(request):
            part = multipart.parse_media_type(params.get("type", ""))[0]
            if media in ("*/*", "multipart/*") or (media == "multipart/related" and part in (
                    "", "application/octet-stream", "application/*", "*/*")):
                ok = True
        if not ok:
            raise NotAcceptableError('frames are available as multipart/related; type="application/octet-stream" only')
        target = selectors.retrieve_target(request.user, study, series, instance, project=self.project())
        data = selectors.frames(target, numbers)
        services.audit_retrieve(request.user, target, f"frames {frames[:40]}")
        boundary = multipart.new_boundary()
        body = b"".join(f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + d + b"\r\n"
                        for d in data) + f"--{boundary}--\r\n".encode()
        return HttpResponse(body, content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')
