"""REST API writes of research projects, under ``/api/projects/<key>/``: thin views over
``dicomflow.projects.services`` (which check the role and write the audit log) and reads through
``dicomflow.projects.selectors``.

Anyone not a member of the project gets 404 (the project does not exist for them); a member whose
role does not allow the action gets 403; errors are RFC 9457 problem details.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from dicomflow.api.project_serializers import (
    EventCreateSerializer,
    EventSerializer,
    MemberCreateSerializer,
    MemberSerializer,
    SanityOverrideCreateSerializer,
    SanityOverrideSerializer,
    SlotCreateSerializer,
    SlotLinkSerializer,
    SlotSerializer,
    StagingJobSerializer,
    StagingRequestSerializer,
    SubjectCreateSerializer,
    SubjectSerializer,
)
from dicomflow.api.serializers import ErrorSerializer
from dicomflow.api.views import ZipRenderer
from dicomflow.catalog.models import Series, Study
from dicomflow.errors import NotFoundError
from dicomflow.projects import selectors, services
from dicomflow.projects.models import Capability

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ProjectScoped(generics.GenericAPIView):
    """A view under ``/api/projects/<key>/``; ``project(cap)`` is the project checked for ``cap``."""

    def project(self, capability: str = Capability.VIEW):
        return selectors.project_for(self.request.user, self.kwargs["key"], capability)

    def page(self, queryset, serializer_class) -> Response:
        rows = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(rows, many=True).data)


# --- staging -----------------------------------------------------------------------------------------------
class StagingView(ProjectScoped):
    """Staging jobs of the project: list them, or stage a clinical study's series (and what they
    reference) into the project's de-identified copy."""

    serializer_class = StagingJobSerializer

    @extend_schema(responses={200: StagingJobSerializer(many=True), **ERRORS})
    def get(self, request, key):
        """The project's staging jobs, newest first (any member)."""
        return self.page(selectors.staging_jobs_of(self.project()), StagingJobSerializer)

    @extend_schema(request=StagingRequestSerializer, responses={202: StagingJobSerializer, **ERRORS})
    def post(self, request, key):
        """Stage a clinical study (data managers with clinical-pool access). The job runs in the
        background: poll the list for its status. Audited (STAGE), refusals too."""
        project = self.project()
        data = _valid(StagingRequestSerializer, request.data)
        study = Study.objects.filter(study_instance_uid=data["study_uid"], project__isnull=True).first()
        if study is None:
            services.check_may_stage(request.user, project, "unknown study")
            raise NotFoundError("no clinical study with this Study Instance UID")
        job = services.stage_series(request.user, project, study, data.get("series_uids") or None)
        return Response(StagingJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class StagingJobView(ProjectScoped):
    serializer_class = StagingJobSerializer

    @extend_schema(responses={200: StagingJobSerializer, **ERRORS})
    def get(self, request, key, job_id):
        """One staging job of the project: poll it until ``status`` is completed or failed."""
        return Response(StagingJobSerializer(selectors.staging_job_of(self.project(), job_id)).data)


# --- subjects, events, slots ---------------------------------------------------------------------------------
class SubjectListView(ProjectScoped):
    """The project's subjects: list (members) and enrol (data managers)."""

    serializer_class = SubjectSerializer

    @extend_schema(responses={200: SubjectSerializer(many=True), **ERRORS})
    def get(self, request, key):
        """Subjects of the project, by study subject ID."""
        return self.page(selectors.subjects_of(self.project()), SubjectSerializer)

    @extend_schema(request=SubjectCreateSerializer, responses={201: SubjectSerializer, **ERRORS})
    def post(self, request, key):
        """Enrol a subject: the ID is never a clinical Patient ID; sex and birth date or year are required."""
        project = self.project()
        data = _valid(SubjectCreateSerializer, request.data)
        patient = None
        if data.get("patient") is not None:
            patient = selectors.visible_patients(request.user).filter(pk=data["patient"], project__isnull=True).first()
            if patient is None:
                raise NotFoundError("no clinical patient with this id that you may see")
        subject = services.enrol_subject(
            request.user, project, data.get("study_subject_id") or None, patient, expected_sex=data["sex"],
            expected_birth_date=data.get("birth_date"), expected_birth_year=data.get("birth_year"),
        )
        return Response(SubjectSerializer(subject).data, status=status.HTTP_201_CREATED)


class SubjectDetailView(ProjectScoped):
    serializer_class = SubjectSerializer

    @extend_schema(responses={200: SubjectSerializer, **ERRORS})
    def get(self, request, key, subject_id):
        """One subject of the project."""
        return Response(SubjectSerializer(selectors.subject_of(self.project(), subject_id)).data)


class EventListView(ProjectScoped):
    """Events (visits, time points) of a subject."""

    serializer_class = EventSerializer

    @extend_schema(responses={200: EventSerializer(many=True), **ERRORS})
    def get(self, request, key, subject_id):
        """The subject's events in order."""
        subject = selectors.subject_of(self.project(), subject_id)
        return self.page(subject.events.order_by("order", "date", "id"), EventSerializer)

    @extend_schema(request=EventCreateSerializer, responses={201: EventSerializer, **ERRORS})
    def post(self, request, key, subject_id):
        """Add an event (data managers); an existing name answers that event."""
        subject = selectors.subject_of(self.project(), subject_id)
        data = _valid(EventCreateSerializer, request.data)
        event = services.add_event(request.user, subject, data["name"], data.get("date"), data.get("order"))
        return Response(EventSerializer(event).data, status=status.HTTP_201_CREATED)


class SlotListView(ProjectScoped):
    """Upload slots of an event."""

    serializer_class = SlotSerializer

    def event(self, subject_id, event_id):
        return selectors.event_of(selectors.subject_of(self.project(), subject_id), event_id)

    @extend_schema(responses={200: SlotSerializer(many=True), **ERRORS})
    def get(self, request, key, subject_id, event_id):
        """The event's slots, with the study each holds and its link history."""
        event = self.event(subject_id, event_id)
        return self.page(event.slots.select_related("study").order_by("name"), SlotSerializer)

    @extend_schema(request=SlotCreateSerializer, responses={201: SlotSerializer, **ERRORS})
    def post(self, request, key, subject_id, event_id):
        """Add an upload slot (data managers); an existing name answers that slot."""
        data = _valid(SlotCreateSerializer, request.data)
        slot = services.add_slot(request.user, self.event(subject_id, event_id), data["name"])
        return Response(SlotSerializer(slot).data, status=status.HTTP_201_CREATED)


class SlotDetailView(ProjectScoped):
    serializer_class = SlotSerializer

    @extend_schema(responses={200: SlotSerializer, **ERRORS})
    def get(self, request, key, slot_id):
        """One upload slot: the study it holds and every study it held."""
        return Response(SlotSerializer(selectors.slot_of(self.project(), slot_id)).data)


class SlotLinkView(ProjectScoped):
    serializer_class = SlotSerializer

    @extend_schema(request=SlotLinkSerializer, responses={200: SlotSerializer, 409: ErrorSerializer, **ERRORS})
    def post(self, request, key, slot_id):
        """Link a study of the project's copy to the slot (data managers; uploaders for their own upload).
        A slot holding another study answers 409 unless ``confirm`` is true. Audited (SLOT_LINK)."""
        project = self.project()
        data = _valid(SlotLinkSerializer, request.data)
        slot = selectors.slot_of(project, slot_id)
        slot = services.link_study(request.user, slot, selectors.copy_study(project, data["study_uid"]),
                                   confirm=data["confirm"])
        return Response(SlotSerializer(selectors.slot_of(project, slot.pk)).data)


# --- sanity overrides -----------------------------------------------------------------------------------------
class SanityOverrideView(ProjectScoped):
    serializer_class = SanityOverrideSerializer

    @extend_schema(request=SanityOverrideCreateSerializer, responses={201: SanityOverrideSerializer, **ERRORS})
    def post(self, request, key):
        """Accept a sanity conflict of the project's data with a reason (data managers). The result
        itself is kept. Audited (OVERRIDE)."""
        project = self.project()
        data = _valid(SanityOverrideCreateSerializer, request.data)
        result = services.sanity_result_of(project, data["result"])
        override = services.override_sanity(request.user, project, result, data["reason"], data["status"])
        return Response(SanityOverrideSerializer(override).data, status=status.HTTP_201_CREATED)


# --- members ------------------------------------------------------------------------------------------------
class MemberListView(ProjectScoped):
    """Members of the project and their roles (project administrators)."""

    serializer_class = MemberSerializer

    @extend_schema(responses={200: MemberSerializer(many=True), **ERRORS})
    def get(self, request, key):
        """The project's members."""
        return self.page(selectors.members_of(self.project(Capability.ADMINISTER)), MemberSerializer)

    @extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer, **ERRORS})
    def post(self, request, key):
        """Give a user a role in the project (or change it). Audited (ROLE_CHANGE)."""
        from dicomflow.accounts.services import get_user

        project = self.project()
        data = _valid(MemberCreateSerializer, request.data)
        selectors.require(request.user, project, Capability.ADMINISTER)  # before telling which users exist
        member = services.add_member(request.user, project, get_user(data["user"]), data["role"])
        return Response(MemberSerializer(member).data, status=status.HTTP_201_CREATED)


class MemberDetailView(ProjectScoped):
    serializer_class = MemberSerializer

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request, key, username):
        """Take a user out of the project. Audited (ROLE_CHANGE)."""
        from dicomflow.accounts.services import get_user

        project = self.project()
        selectors.require(request.user, project, Capability.ADMINISTER)
        services.remove_member(request.user, project, get_user(username))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- identifying data -----------------------------------------------------------------------------------------
class IdentifiedSeriesView(ProjectScoped):
    serializer_class = ErrorSerializer
    renderer_classes = [JSONRenderer, ZipRenderer]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, **ERRORS})
    def get(self, request, key, series_uid):
        """Download identifying data: a series of the project's copy re-identified (original patient and
        UIDs), as a ZIP. Re-identifiers of the project only. Audited (SERIES_DOWNLOAD), refusals too."""
        from dicomflow.deid.services import download_identified_series

        project = self.project()
        series = Series.objects.filter(project=project, series_instance_uid=series_uid).first()
        if series is None:
            raise NotFoundError(f"no series with this UID in project '{project.key}'")
        archive = download_identified_series(request.user, project, series)
        return FileResponse(_TemporaryFile(archive), as_attachment=True, content_type="application/zip",
                            filename=f"series-{series.pk}-identified.zip")


class _TemporaryFile(io.FileIO):
    """A file whose private folder is removed once the response has been sent (or abandoned)."""

    def __init__(self, path: Path):
        super().__init__(path, "rb")
        self.folder = Path(path).parent

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.folder, ignore_errors=True)

