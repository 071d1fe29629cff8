"""``/projects/<key>/lookup/``: find patients by Patient ID or study subject ID (autocomplete, or a
bulk list of partial IDs), see which of their studies are pseudonymized in the project, choose
series (table or RT tree) and Stage them; then watch the staging job and its verification.

**Find in PACS** (users who see the clinical pool, with a configured DICOM node): C-FIND a clinical
PACS by Patient ID, name (wildcards) and study dates, **Pull** a study into the clinical pool
(``dicomflow.projects.pacs``, audited) — it then shows in the lookup, ready to **Stage**."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dicomflow.errors import DicomflowError, InputError
from dicomflow.export.qr import Query
from dicomflow.projects import pacs, selectors, services
from dicomflow.projects.models import Capability
from dicomflow.web.research.context import remember
from dicomflow.web.research.http import json_body, json_endpoint, project_or_404

MAX_TERMS = 50


def may_stage(user, project) -> bool:
    """Staging reads the clinical pool: MANAGE in the project and sight of the pool."""
    return selectors.can(user, project, Capability.MANAGE) and selectors.can_see_clinical(user)


def _terms(text: str) -> list[str]:
    terms = [t.strip() for t in (text or "").split(",") if t.strip()]
    if len(terms) > MAX_TERMS:
        raise InputError(f"search at most {MAX_TERMS} IDs at once")
    return terms


@login_required
def lookup(request, key: str):
    project = project_or_404(request, key, Capability.VIEW)
    remember(request, project)
    query, error, rows = request.GET.get("ids", ""), "", []
    try:
        rows = selectors.lookup_patients(request.user, project, _terms(query))
    except InputError as exc:
        error = str(exc)
    return render(request, "web/research/lookup.html", {
        "project": project, "query": query, "rows": rows, "error": error, "searched": bool(query.strip()),
        "can_stage": may_stage(request.user, project), "clinical": selectors.can_see_clinical(request.user),
        "nav": "lookup", **_pacs_context(request),
    })


def may_pull(user) -> bool:
    """Pulling from a PACS adds to the clinical pool: sight of it and the right to add to it."""
    return selectors.can_see_clinical(user) and selectors.can_upload(user)


def _pacs_context(request, pulled: dict | None = None) -> dict:
    """The "Find in PACS" panel: the nodes, the query as given and, when asked, its studies."""
    if not selectors.can_see_clinical(request.user):
        return {"pacs_nodes": []}
    nodes = list(pacs.query_nodes())
    params = {k: request.GET.get(f"pacs_{k}", "").strip() for k in ("node", "id", "name", "from", "to", "modality")}
    context = {"pacs_nodes": nodes, "pacs": params, "can_pull": may_pull(request.user), "pacs_pulled": pulled,
               "pacs_searched": False, "pacs_studies": [], "pacs_error": ""}
    if params["node"] and request.GET.get("pacs_find"):
        context["pacs_searched"] = True
        query = Query(patient_id=params["id"], patient_name=params["name"], date_from=params["from"],
                      date_to=params["to"], modality=params["modality"])
        try:
            if not (params["id"] or params["name"]):
                raise InputError("give a Patient ID or a name to find in the PACS")
            context["pacs_studies"] = pacs.find_studies(request.user, params["node"], query)
        except DicomflowError as exc:
            context["pacs_error"] = str(exc)
    return context


@login_required
@require_http_methods(["POST"])
def pacs_pull(request, key: str):
    """Pull: retrieve one study from the chosen PACS into the clinical pool, then show it in the lookup."""
    project = project_or_404(request, key, Capability.VIEW)
    node, study, patient_id = (request.POST.get(k, "").strip() for k in ("node", "study", "patient_id"))
    pulled: dict = {"error": ""}
    try:
        pulled.update(pacs.retrieve(request.user, node, study, move=request.POST.get("move") == "1"))
    except DicomflowError as exc:
        pulled["error"] = str(exc)
    query, rows = patient_id, []
    if patient_id:
        rows = selectors.lookup_patients(request.user, project, [patient_id])
    return render(request, "web/research/lookup.html", {
        "project": project, "query": query, "rows": rows, "error": "", "searched": bool(query),
        "can_stage": may_stage(request.user, project), "clinical": selectors.can_see_clinical(request.user),
        "nav": "lookup", **_pacs_context(request, pulled),
    })


@require_GET
@json_endpoint
def suggest(request, key: str):
    """At most 10 patients whose Patient ID or study subject ID contains ``q``."""
    project = project_or_404(request, key, Capability.VIEW)
    return JsonResponse({"suggestions": selectors.lookup_suggestions(request.user, project, request.GET.get("q", ""))})


@require_GET
@json_endpoint
def study_series(request, key: str):
    """The series of one study of the lookup, with RT references both ways, for the edit dialog."""
    project = project_or_404(request, key, Capability.VIEW)
    study = selectors.lookup_study(request.user, project, request.GET.get("study", ""))
    return JsonResponse({"study": study.study_instance_uid, "description": study.description,
                         "series": selectors.study_series_tree(study)})


@require_POST
@json_endpoint
def stage(request, key: str):
    """Stage: the chosen series (and what they reference) into the project, as a job on a worker."""
    project = project_or_404(request, key, Capability.VIEW)
    data = json_body(request)
    study = selectors.lookup_study(request.user, project, str(data.get("study") or ""))
    series = data.get("series") or None
    if series is not None and not (isinstance(series, list) and all(isinstance(s, str) for s in series)):
        raise InputError("series must be a list of series UIDs")
    job = services.stage_series(request.user, project, study, series)
    return JsonResponse({"job": job.pk, "progress": reverse("research-staging", args=[project.key, job.pk])},
                        status=202)


@require_GET
@json_endpoint
def staging(request, key: str, job: int):
    """One staging job's progress and, once finished, its verification (no clinical UIDs)."""
    project = project_or_404(request, key, Capability.MANAGE)
    found = selectors.staging_job_in(project, job)
    state = {k: v for k, v in found.as_dict().items() if k not in ("requested_series", "selected_series")}
    state["series_requested"], state["series_selected"] = len(found.requested_series), len(found.selected_series)
    state["verification"] = selectors.staging_verification(found)
    state["pseudonymized"] = selectors.is_pseudonymized(project, found.source_study)
    state["percent"] = found.percent
    return JsonResponse(state)
