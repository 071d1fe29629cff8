"""Web pages: server-rendered, paginated, thin. What a user sees comes from
``dicomflow.projects.selectors`` (the same rule as the API); catalog details from
``dicomflow.catalog.selectors`` / ``rt_selectors``; uploads use the REST API from JS.
The web never imports the API package: both sit on the same selectors.
"""

from __future__ import annotations

import datetime

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.shortcuts import get_object_or_404, render

from dicomflow.catalog import rt_selectors
from dicomflow.catalog import selectors as catalog
from dicomflow.errors import InputError
from dicomflow.intake.models import ImportRun, UploadSession
from dicomflow.intake.resumable import UploadLimits
from dicomflow.processing.selectors import series_processing_state, visible_jobs
from dicomflow.projects import selectors as visibility

PAGE = 50


def _page(request, qs, per_page: int = PAGE):
    return Paginator(qs, per_page).get_page(request.GET.get("page"))


def _filtered(request, fn, qs, params=None):
    """Apply the API's filters; a malformed parameter becomes a message on the page, not an error."""
    params = request.GET if params is None else params
    try:
        return fn(qs, params), ""
    except InputError as exc:
        return fn(qs, {}), str(exc)


def _scoped(request) -> tuple[dict, dict]:
    """The list's filters, scoped to the active project unless the user chose a scope (``?project=``),
    and the scope choices for the page: this project's copy, the clinical pool (for those who see
    it), or everything the user may see."""
    from dicomflow.web.research.context import active_project

    params = request.GET.copy()
    active = active_project(request)
    if "project" not in params and active is not None:
        params["project"] = active.key
    scope = {"current": params.get("project", ""), "active": active.key if active else "",
             "clinical": visibility.can_see_clinical(request.user)}
    return params, scope


@login_required
def home(request):
    user = request.user
    counts = {
        "patients": visibility.visible_patients(user).count(),
        "studies": visibility.visible_studies(user).count(),
        "series": visibility.visible_series(user).count(),
        "instances": visibility.visible_instances(user).count(),
    }
    modalities = (
        visibility.visible_series(user).values("modality").annotate(n=Count("id")).order_by("-n", "modality")[:12]
    )
    imports = ImportRun.objects.order_by("-started_at", "-id")[:8] if visibility.can_view_imports(user) else None
    uploads = UploadSession.objects.filter(owner=user).order_by("-created_at")[:5]
    return render(request, "web/home.html", {
        "counts": counts, "modalities": modalities, "imports": imports, "uploads": uploads,
        "can_upload": visibility.can_upload(user), "nav": "home",
    })


@login_required
def patients(request):
    params, scope = _scoped(request)
    qs, error = _filtered(request, catalog.filter_patients,
                          visibility.visible_patients(request.user).select_related("project"), params)
    return render(request, "web/patients.html", {
        "page": _page(request, qs.order_by("patient_id", "pk")), "q": request.GET.get("q", ""), "error": error,
        "nav": "patients", "scope": scope,
    })


@login_required
def patient(request, pk: int):
    obj = get_object_or_404(visibility.visible_patients(request.user), pk=pk)
    studies = catalog.filter_studies(visibility.visible_studies(request.user).filter(patient=obj), {}).order_by("-study_date")
    modalities = {}
    for study_id, modality in visibility.visible_series(request.user).filter(study__patient=obj).values_list("study_id", "modality").distinct():
        modalities.setdefault(study_id, []).append(modality)
    rows = [(s, sorted(modalities.get(s.pk, []))) for s in studies]
    return render(request, "web/patient.html", {"patient": obj, "rows": rows, "nav": "patients"})


@login_required
def studies(request):
    params, scope = _scoped(request)
    qs, error = _filtered(request, catalog.filter_studies, visibility.visible_studies(request.user), params)
    return render(request, "web/studies.html", {
        "page": _page(request, qs.order_by("-study_date", "study_instance_uid")), "params": request.GET,
        "error": error, "nav": "studies", "scope": scope,
    })


@login_required
def study(request, uid: str):
    obj = get_object_or_404(visibility.visible_studies(request.user).select_related("patient"), study_instance_uid=uid)
    series = catalog.filter_series(visibility.visible_series(request.user).filter(study=obj), {}).order_by(
        "series_number", "series_instance_uid")
    analysed = rt_selectors.is_analysed(obj)
    tree = rt_selectors.study_tree(obj)["series"]
    checks = {c["uid"]: c for c in rt_selectors.study_checks(obj)}
    approval = rt_selectors.approval_statuses(obj, include_review=visibility.can_see_clinical(request.user))
    for node in tree:
        node["check"] = checks.get(node["uid"])
    tree = _flatten_tree(tree, {s.series_instance_uid: s for s in series})
    return render(request, "web/study.html", {
        "study": obj, "series_list": series, "tree": tree, "approval": approval, "analysed": analysed,
        "rt_available": True, "nav": "studies",
    })


_DEPTH_ORDER = {"RTSTRUCT": 1, "RTPLAN": 2, "RTDOSE": 3, "RTIMAGE": 3}


def _flatten_tree(nodes: list[dict], series_by_uid: dict) -> list[dict]:
    """Pre-order rows (with ``indent``): images first, each followed by what references it
    (RTSTRUCT › RTPLAN › RTDOSE/RTIMAGE). A series referencing several others is shown under the
    most specific one (a dose under its plan rather than under the CT)."""
    by_uid = {n["uid"]: n for n in nodes}
    children: dict[str, list[str]] = {}
    roots = []
    for node in nodes:
        present = [r for r in node["references"] if r in by_uid and r != node["uid"]]
        if present:
            parent = max(present, key=lambda r: (_DEPTH_ORDER.get(by_uid[r]["modality"], 0), r))
            children.setdefault(parent, []).append(node["uid"])
        else:
            roots.append(node["uid"])
    rows, placed = [], set()

    def visit(uid: str, depth: int) -> None:
        if uid in placed:
            return
        placed.add(uid)
        rows.append(by_uid[uid] | {"indent": depth * 24, "series": series_by_uid.get(uid)})
        for child in children.get(uid, []):
            visit(child, depth + 1)

    for uid in roots + [n["uid"] for n in nodes]:  # then anything only reachable through a cycle
        visit(uid, 0)
    return rows


@login_required
def series(request, uid: str):
    obj = get_object_or_404(
        visibility.visible_series(request.user).select_related("study", "study__patient"), series_instance_uid=uid
    )
    instances = catalog.filter_instances(visibility.visible_instances(request.user).filter(series=obj), {}).order_by(
        "instance_number", "sop_instance_uid")
    checks = catalog.series_checks(obj)
    checked_at = datetime.datetime.fromisoformat(checks["checked_at"]) if checks else None
    return render(request, "web/series.html", {
        "series": obj, "page": _page(request, instances, 100), "image": catalog.image_geometry(obj),
        "rt": catalog.rt_details(obj), "checks": checks, "checked_at": checked_at, "nav": "studies",
        "processing": series_processing_state(obj), "jobs": _jobs_of(request.user, obj),
    })


def _jobs_of(user, series_obj) -> list:
    return list(visible_jobs(user).filter(series=series_obj).select_related("template").order_by("-created_at")[:10])


@login_required
def imports(request):
    if not visibility.can_view_imports(request.user):
        raise PermissionDenied("you may not see imports")
    qs = ImportRun.objects.order_by("-started_at", "-id")
    if kind := request.GET.get("source_kind"):
        qs = qs.filter(source_kind=kind)
    return render(request, "web/imports.html", {"page": _page(request, qs), "nav": "imports"})


@login_required
def import_detail(request, pk: int):
    if not visibility.can_view_imports(request.user):
        raise PermissionDenied("you may not see imports")
    run = get_object_or_404(ImportRun, pk=pk)
    return render(request, "web/import_detail.html", {"run": run, "nav": "imports"})


@login_required
def api_token(request):
    """The user's API keys for the SDK (``Client(url, api_key=...)``): create (shown once), revoke."""
    from dicomflow.accounts.selectors import api_keys_of
    from dicomflow.accounts.services import create_api_key, revoke_api_key
    from dicomflow.errors import DicomflowError

    new_key, error = None, ""
    if request.method == "POST":
        try:
            if request.POST.get("revoke"):
                revoke_api_key(request.user, request.POST["revoke"])
            else:
                days = request.POST.get("expires_in_days") or None
                _, new_key = create_api_key(request.user, request.user, name=request.POST.get("name", ""),
                                            expires_in_days=int(days) if days else None)
        except (DicomflowError, ValueError) as exc:
            error = str(exc) if isinstance(exc, DicomflowError) else "give the expiry as a whole number of days"
    return render(request, "web/token.html", {"new_key": new_key, "keys": api_keys_of(request.user), "error": error,
                                             "nav": "apikeys", "base_url": request.build_absolute_uri("/").rstrip("/")})


@login_required
def upload(request):
    if not visibility.can_upload(request.user):
        raise PermissionDenied("you may not upload")
    limits = UploadLimits.from_env()
    return render(request, "web/upload.html", {"limits": limits, "chunk": min(limits.max_chunk, 4 * 1024 * 1024),
                                              "nav": "upload"})

