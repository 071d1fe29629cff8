"""Processing through the REST API: jobs (send, look at, retry, cancel, QC, override, download the
results), templates, rulesets, the rules' dry run, and the audit log. Thin: reads through
``dicomflow.processing.selectors`` / ``dicomflow.accounts.selectors``, every write through
``dicomflow.processing.services`` as the request's user. Refusals come back as problem details
(403 not allowed, 404 another project's job) from the global exception handler.
"""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from dicomflow.api import processing_serializers as s
from dicomflow.api.serializers import ErrorSerializer
from dicomflow.api.views import ZipRenderer
from dicomflow.processing import selectors, services
from dicomflow.processing.models import Job, Ruleset, Template

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}
NAME_REGEX = r"[^/]{1,100}"


def _detail(job: Job) -> dict:
    job = Job.objects.select_related("series", "template").get(pk=job.pk)
    job.summary = selectors.job_summary(job.pk)
    return s.JobDetailSerializer(job).data


def _job_action(description: str, request=None, code: int = 200):
    return extend_schema(description=description, request=request,
                         responses={code: s.JobDetailSerializer, **ERRORS})


# --- jobs -------------------------------------------------------------------------------------------------------
class JobViewSet(viewsets.GenericViewSet):
    """Processing jobs of your projects (all, for superusers), with their stages — the CLI's summary."""

    lookup_value_regex = r"[0-9]{1,18}"

    def get_serializer_class(self):
        return s.JobDetailSerializer if self.action == "retrieve" else s.JobSerializer

    def get_queryset(self):
        qs = selectors.visible_jobs(self.request.user)
        params = self.request.query_params
        if value := params.get("status"):
            qs = qs.filter(status=value)
        if value := params.get("series_uid"):
            qs = qs.filter(series__series_instance_uid=value)
        if value := params.get("project"):
            qs = qs.filter(project_key=value)
        return qs.select_related("series", "template").order_by("-created_at", "-id")

    @extend_schema(description="Jobs you may see, newest first, filtered by status, series and project.",
                   parameters=[OpenApiParameter("status", str, required=False, description="A job status."),
                               OpenApiParameter("series_uid", str, required=False, description="A series' UID."),
                               OpenApiParameter("project", str, required=False, description="A project key.")],
                   responses={200: s.JobSerializer(many=True), **ERRORS})
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.JobSerializer(page, many=True).data)

    @extend_schema(description="A job: status (finished at the end), stages with progress, results, overrides.",
                   responses={200: s.JobDetailSerializer, **ERRORS})
    def retrieve(self, request, pk=None):
        return Response(_detail(self.get_object()))

    @extend_schema(
        description="Send a catalogued series (or every fitting series of a study) for processing in a project "
                    "(data-manager role; the series must be visible to you). Without a template the rules' choice "
                    "is used. Answers with the job (a list of jobs for a study); it runs on the worker.",
        request=s.JobCreateSerializer,
        responses={201: PolymorphicProxySerializer(component_name="JobCreated", resource_type_field_name=None,
                                                   serializers=[s.JobDetailSerializer,
                                                                s.JobDetailSerializer(many=True)], many=False),
                   **ERRORS})
    def create(self, request):
        data = s.JobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        jobs = services.send_for_processing(
            request.user, project_key=values["project"], template_name=values.get("template") or None,
            series_uids=[values["series_uid"]] if "series_uid" in values else None,
            study_uid=values.get("study_uid"), require_qc=values["require_qc"])
        body = [_detail(job) for job in jobs] if "study_uid" in values else _detail(jobs[0])
        return Response(body, status=status.HTTP_201_CREATED)

    @_job_action("Retry the failed stage (data-manager role); the job runs on from there.")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return Response(_detail(services.retry_job(request.user, int(pk))))

    @_job_action("Cancel the job (data-manager role): at once, or after its running stage.")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return Response(_detail(services.cancel_job(request.user, int(pk))))

    @_job_action("Quality control: approve the result (data-manager role); export follows. Audited.")
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return Response(_detail(services.approve_qc(request.user, int(pk))))

    @_job_action("Quality control: reject the result with a reason (data-manager role); the job fails. Audited.",
                 request=s.JobRejectSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        data = s.JobRejectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(_detail(services.reject_qc(request.user, int(pk), data.validated_data["reason"])))

    @_job_action("Let a blocking check finding pass for this job, with a reason (data-manager role; audited); "
                 "then retry the job.", request=s.JobOverrideSerializer)
    @action(detail=True, methods=["post"])
    def override(self, request, pk=None):
        data = s.JobOverrideSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.override_blocking_finding(request.user, int(pk), data.validated_data["code"],
                                                 data.validated_data["reason"])
        return Response(_detail(job))

    @extend_schema(description="The re-identified results as one ZIP (identifying: Re-identifiers, or data "
                               "managers who may see the clinical pool). Audited.",
                   responses={(200, "application/zip"): OpenApiTypes.BINARY, **ERRORS})
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, ZipRenderer])
    def results(self, request, pk=None):
        path = services.download_results(request.user, int(pk))
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name, content_type="application/zip")

    @extend_schema(description="The job's processing log (oldest first), filtered by level and stage.",
                   parameters=[OpenApiParameter("level", str, required=False,
                                                description="DEBUG, INFO, WARNING or ERROR."),
                               OpenApiParameter("stage", str, required=False, description="A stage name.")],
                   responses={200: s.LogEntrySerializer(many=True), **ERRORS})
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        job = self.get_object()
        entries = selectors.log_entries(job_id=job.pk, level=request.query_params.get("level") or None,
                                        stage=request.query_params.get("stage") or None)
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(s.LogEntrySerializer(page, many=True).data)


# --- templates and rulesets ------------------------------------------------------------------------------------
class DefinitionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Shared by templates and rulesets: anyone logged in reads; writes go through the services, which
    need a superuser or the add/change/delete permission of the model."""

    kind = ""  # "template" or "ruleset"
    update_serializer = None
    lookup_field = "name"
    lookup_value_regex = NAME_REGEX

    def _values(self, serializer_class, data) -> dict:
        checked = serializer_class(data=data)
        checked.is_valid(raise_exception=True)
        return dict(checked.validated_data)

    def create(self, request):
        values = self._values(self.get_serializer_class(), request.data)
        row = getattr(services, f"create_{self.kind}")(request.user, **values)
        return Response(self.get_serializer(row).data, status=status.HTTP_201_CREATED)

    def update(self, request, name=None):
        values = self._values(self.update_serializer, request.data)
        if "name" in values:
            values["new_name"] = values.pop("name")
        row = getattr(services, f"update_{self.kind}")(request.user, name, **values)
        return Response(self.get_serializer(row).data)

    def partial_update(self, request, name=None):
        return self.update(request, name)

    def destroy(self, request, name=None):
        getattr(services, f"delete_{self.kind}")(request.user, name)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _definition_schema(kind: str, serializer, update_serializer):
    writes = "a superuser or the '{verb} " + kind + "' permission"
    return {
        "list": extend_schema(description=f"Every {kind}.", responses={200: serializer(many=True), **ERRORS}),
        "retrieve": extend_schema(description=f"One {kind}, by name.", responses={200: serializer, **ERRORS}),
        "create": extend_schema(description=f"A new {kind}, validated ({writes.format(verb='add')}).",
                                request=serializer, responses={201: serializer, **ERRORS}),
        "update": extend_schema(description=f"Change a {kind}; built-in ones too ({writes.format(verb='change')}).",
                                request=update_serializer, responses={200: serializer, **ERRORS}),
        "partial_update": extend_schema(description=f"Change a {kind} ({writes.format(verb='change')}).",
                                        request=update_serializer, responses={200: serializer, **ERRORS}),
        "destroy": extend_schema(description=f"Delete a {kind} ({writes.format(verb='delete')})"
                                 + ("; a template used by a job or named by a ruleset is kept (400)."
                                    if kind == "template" else "."),
                                 responses={204: None, **ERRORS}),
    }


@extend_schema_view(**_definition_schema("template", s.TemplateSerializer, s.TemplateUpdateSerializer))
class TemplateViewSet(DefinitionViewSet):
    """Processing templates (processor, parameters, ROIs, destinations, blocking check findings)."""

    kind = "template"
    serializer_class = s.TemplateSerializer
    update_serializer = s.TemplateUpdateSerializer
    queryset = Template.objects.order_by("name")


@extend_schema_view(**_definition_schema("ruleset", s.RulesetSerializer, s.RulesetUpdateSerializer))
class RulesetViewSet(DefinitionViewSet):
    """Rulesets: rules on attributes that choose a template for a series."""

    kind = "ruleset"
    serializer_class = s.RulesetSerializer
    update_serializer = s.RulesetUpdateSerializer
    queryset = Ruleset.objects.order_by("order", "name")



class RulesDryRunView(APIView):
    """What the rules decide for a series, explained; writes nothing."""

    @extend_schema(description="Evaluate the stored rulesets (or the unsaved ones given) on a series you may see; "
                               "nothing is stored.",
                   request=s.DryRunRequestSerializer, responses={200: s.DryRunSerializer, **ERRORS})
    def post(self, request):
        data = s.DryRunRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.rules_dry_run(request.user, data.validated_data["series_uid"],
                                        data.validated_data.get("rulesets"))
        return Response(s.DryRunSerializer(result).data)


# --- audit log ---------------------------------------------------------------------------------------------------
class AuditViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The audit log, newest first (administrators only)."""

    serializer_class = s.AuditEntrySerializer

    def get_queryset(self):
        from dicomflow.accounts.selectors import audit_entries

        params = self.request.query_params
        return audit_entries(self.request.user, action=params.get("action") or None,
                             project=params.get("project") or None, username=params.get("user") or None)

    @extend_schema(description="Audited actions (exports, downloads, re-identifications, staging, overrides, QC "
                               "decisions, role changes, failed logins); administrators only.",
                   parameters=[OpenApiParameter("action", str, required=False, description="An audited action."),
                               OpenApiParameter("project", str, required=False, description="A project key."),
                               OpenApiParameter("user", str, required=False, description="A user name.")],
                   responses={200: s.AuditEntrySerializer(many=True), **ERRORS})
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

